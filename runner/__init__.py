"""mailrun: play SMTP, POP3 and IMAP conversations written as YAML scenarios."""

__version__ = "0.1.0"
