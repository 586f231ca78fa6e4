"""The conversation engine (runner.engine.run.Engine): plays scenarios over a transport and a
sans-IO protocol and emits the events of runner.events. run.py's docstring maps its modules."""
