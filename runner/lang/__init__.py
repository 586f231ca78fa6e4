"""The scenario language: templates (the one `{{ }}` parser), render (Context, rendering),
patterns (S: patterns and matching), pattern_parse (S: values -> patterns), secrets."""
