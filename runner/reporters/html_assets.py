"""The HTML report's style sheet and script (runner.reporters.html), inlined into every report:
the page fetches nothing. The script only filters and folds sections; the page reads the same
without it."""

CSS = """
:root { --pass: #1a7f37; --fail: #cf222e; --error: #bc4c00; --skip: #6e7781; --line: #d0d7de;
  --client: #ddf4ff; --server: #f6f8fa; --ink: #1f2328; --muted: #57606a; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink);
  background: #fff; }
header { position: sticky; top: 0; z-index: 2; background: #fff; border-bottom: 1px solid var(--line);
  padding: 10px 20px; }
h1 { font-size: 18px; margin: 0 0 4px; }
h2 { font-size: 15px; margin: 0; display: inline; }
h3 { font-size: 13px; margin: 12px 0 6px; font-weight: 600; }
main { padding: 10px 20px 40px; max-width: 1200px; }
pre { margin: 0; white-space: pre-wrap; word-break: break-word; font: 12.5px/1.4 ui-monospace,
  SFMono-Regular, Menlo, Consolas, monospace; }
.meta, .loc, .sys, .time { color: var(--muted); font-size: 12px; }
.counts { display: flex; flex-wrap: wrap; gap: 6px 18px; margin: 6px 0; }
.counts div { display: flex; gap: 4px; align-items: baseline; }
.counts dt { color: var(--muted); } .counts dd { margin: 0; font-weight: 600; }
#filters button { font: inherit; padding: 3px 10px; margin: 2px 4px 2px 0; border: 1px solid var(--line);
  border-radius: 14px; background: #fff; cursor: pointer; }
#filters button[aria-pressed="true"] { background: var(--ink); color: #fff; border-color: var(--ink); }
.scenario { border: 1px solid var(--line); border-left: 5px solid var(--skip); border-radius: 6px;
  margin: 10px 0; padding: 6px 12px; }
.scenario > details > summary { cursor: pointer; padding: 4px 0; }
.badge { display: inline-block; min-width: 44px; text-align: center; font-size: 11px; font-weight: 700;
  color: #fff; background: var(--skip); border-radius: 3px; padding: 1px 5px; margin-right: 6px; }
.status-passed { border-left-color: var(--pass); } .status-passed > .badge,
  .status-passed .badge.own, .badge.status-passed { background: var(--pass); }
.status-failed { border-left-color: var(--fail); } .badge.status-failed { background: var(--fail); }
.status-error { border-left-color: var(--error); } .badge.status-error { background: var(--error); }
.status-unchecked { border-left-color: var(--fail); } .badge.status-unchecked { background: var(--fail); }
.reason { color: var(--fail); margin: 4px 0; }
.verdict { margin: 4px 0; font-weight: 600; }
.verdict.status-failed, .verdict.status-error, .verdict.status-unchecked { color: var(--fail); }
.session { border-top: 1px dashed var(--line); margin-top: 8px; }
.chat { list-style: none; margin: 0; padding: 0; display: flex; flex-direction: column; gap: 4px; }
.chat > li.sys, .chat > li.tls { align-self: center; text-align: center; max-width: 90%; }
.tls { border: 1px solid var(--line); border-radius: 6px; padding: 4px 10px; font-size: 12px; }
.tls dl { display: grid; grid-template-columns: auto auto; gap: 0 10px; margin: 2px 0; text-align: left; }
.tls dt { color: var(--muted); } .tls dd { margin: 0; }
.tls.unverified, .warning { border-color: var(--error); color: var(--error); }
.step { display: flex; flex-direction: column; gap: 3px; padding: 4px 0; border-bottom: 1px solid #f0f0f0; }
.stephead { display: flex; gap: 8px; align-items: center; font-size: 12px; flex-wrap: wrap; }
.stephead .label { font-weight: 600; }
.stephead .badge { min-width: 0; }
.time { display: inline-flex; align-items: center; gap: 4px; margin-left: auto; }
.track { display: inline-block; width: 120px; height: 6px; background: #eaeef2; border-radius: 3px; }
.bar { display: block; height: 6px; background: #54aeff; border-radius: 3px; min-width: 1px; }
.bubble { max-width: 80%; border-radius: 8px; padding: 4px 10px; border: 1px solid var(--line); }
.bubble .who { font-size: 11px; color: var(--muted); font-weight: 600; }
.bubble.c { align-self: flex-end; background: var(--client); }
.bubble.s { align-self: flex-start; background: var(--server); }
.decoded { font-size: 12px; color: var(--muted); }
.chatter { align-self: stretch !important; text-align: left !important; }
.chatter pre { color: var(--muted); border-left: 3px solid var(--line); padding-left: 8px; }
.problem { border: 1px solid var(--fail); border-radius: 6px; padding: 6px 10px; background: #fff8f8; }
.problem dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0; }
.problem dt { font-weight: 600; color: var(--muted); } .problem dd { margin: 0; }
.diff .add { color: var(--pass); } .diff .del { color: var(--fail); } .diff .hunk { color: var(--muted); }
.wire { margin-top: 8px; } .wire summary { cursor: pointer; color: var(--muted); }
.wire pre { background: var(--server); padding: 6px; max-height: 480px; overflow: auto; }
[hidden] { display: none !important; }
"""

JS = """
(function () {
  "use strict";
  var buttons = Array.prototype.slice.call(document.querySelectorAll("#filters button[data-filter]"));
  var sections = Array.prototype.slice.call(document.querySelectorAll("section.scenario"));
  function show(filter) {
    sections.forEach(function (s) { s.hidden = filter !== "all" && s.dataset.group !== filter; });
    buttons.forEach(function (b) { b.setAttribute("aria-pressed", String(b.dataset.filter === filter)); });
  }
  buttons.forEach(function (b) { b.addEventListener("click", function () { show(b.dataset.filter); }); });
  function fold(open) {
    sections.forEach(function (s) { var d = s.querySelector("details.run"); if (d) { d.open = open; } });
  }
  var expand = document.getElementById("expand"), collapse = document.getElementById("collapse");
  if (expand) { expand.addEventListener("click", function () { fold(true); }); }
  if (collapse) { collapse.addEventListener("click", function () { fold(false); }); }
})();
"""
