"""Reporters: listeners on the event stream (runner.events), one module each.

    base         Reporter, Tee, ReportError, write_atomic: what every reporter is
    text         the text helpers they share (masking, safe text, labels, the retry line)
    summary      a scenario result's verdict, counts, first problem and summary line
    formats      the `--report FORMAT=PATH` table (FORMATS) and reporter_from_spec
    console      ConsoleReporter: live text on a terminal or a pipe, progress, summary table
    json_report  JsonReporter: one JSON document (schemas/report.schema.json)
    junit        JUnitReporter: JUnit XML for CI test reporters
    transcript   TranscriptReporter: one wire transcript file per scenario run
    html         HtmlReporter: one self-contained page (html_assets: its style and script)
    event_json   events <-> the JSON report's `events` (EventRecorder, decode)
    replay       JSON reports back into results and events (`mailrun report merge`)

Each thing is announced once on the stream (a connection, a TLS handshake, a retry, a skipped
step whose `performed_by` says which program did it), so reporters keep no memory of what they
have shown and never read meaning into an event's text. Events already carry masked text; every
reporter still passes each string it outputs through an optional redactor (anything with
`.redact(str) -> str`, e.g. runner.lang.secrets.Redactor).

A new report format: add its module here and one line in runner.reporters.formats.FORMATS.
Code imports the module that defines a name; this package re-exports nothing.
"""
