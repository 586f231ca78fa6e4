"""Loading scenario files: api (the entry points) -> yaml_doc (YAML with positions) -> schema
(JSON Schema, friendly messages) -> checker, steps, includes, build (semantic checks, the
model) ; varfiles (--vars-file, --env-file) ; cacheable (may the model be cached)."""
