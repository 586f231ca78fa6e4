"""Conversations made into scenarios: `mailrun record` (live, runner.record.live) and `mailrun
import` (a pasted transcript, runner.record.transcript) feed runner.record.conversation, whose
turns runner.record.write writes as YAML; runner.record.credentials keeps logins out of it."""
