"""The `mailrun` command line.

    mailrun [run] FILE|DIR|GLOB... [options]   play scenarios (the default command)
    mailrun validate FILE|DIR... [--strict]    check scenarios without connecting
    mailrun schema                             print the scenario JSON Schema
    mailrun sandbox [options]                  run the built-in local mail service
    mailrun report merge REPORT.json... --report FORMAT=PATH...   rebuild reports from JSON ones

Exit status: 0 all passed, 1 an expectation failed, 2 invalid scenario or command line (nothing
sent), 3 network failure, 130 interrupted.

main.py: `main`, which picks the command; args.py: the parsers, the option types and the
argparse-free `mailrun FILE...`; variables.py: env/vars files and --var; validate.py: `mailrun
validate`; run.py: `mailrun run` (load, check, wire the reporters and --sandbox, play);
report.py: `mailrun report merge`.
"""
