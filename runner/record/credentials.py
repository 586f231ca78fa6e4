"""Credentials in what a client sent, found and replaced by templates before anything is written.

A recorded or imported conversation holds the user's real login. `Credentials.replace(line)`
turns each client line into the text a scenario may keep: the login becomes
`{{ env.MAIL_USER }}`, the password `{{ env.MAIL_PASSWORD }}` (or the template that derives the
sent form from it: `| b64`, `auth_plain(...)`, `xoauth2(...)`), and those environment names are
listed as secrets. What it recognises, by protocol:

- SMTP/LMTP `AUTH`, POP3 `AUTH`, IMAP `AUTHENTICATE`: PLAIN, LOGIN and XOAUTH2 answers (initial
  response or after a 334 / `+` challenge); any other mechanism's answers become
  `{{ env.MAIL_SASL_RESPONSE_N }}` with a warning (they depend on the server's challenge)
- POP3 `USER`, `PASS`, `APOP`; IMAP `LOGIN` (atoms, quoted strings, literals)
- any later text holding the password (or its base64) seen so far, where it stands as a word
  (a password shorter than 4 characters only as a whole whitespace-separated token: `123` in
  `FETCH 1:123` is a message number, not the password)
- a `****` that a mailrun transcript wrote in place of a secret, where one of the above is

A second, different password (a refused login, then the right one) gets its own variable,
`MAIL_PASSWORD_2` and so on in the order they were sent, so a replay can send each again.

`warnings` says, once per kind, what was replaced, for the tool to print.
"""

from __future__ import annotations

import base64
import binascii
import re

from runner.lang.secrets import MIN_LENGTH

USER = "{{ env.MAIL_USER }}"
MASK = "****"  # what mailrun's own transcripts and reports show in place of a secret

#: how many answers a client gives in each mechanism's exchange (the initial response counts)
_ANSWERS = {
    "PLAIN": 1,
    "LOGIN": 2,
    "XOAUTH2": 1,
    "OAUTHBEARER": 1,
    "CRAM-MD5": 1,
    "SCRAM-SHA-1": 2,
    "SCRAM-SHA-256": 2,
}
_B64_TOKEN = re.compile(r"(?<![\w+/=])[A-Za-z0-9+/]{8,}={0,2}(?![\w+/=])")
_SASL_COMMANDS = {"smtp": "AUTH", "lmtp": "AUTH", "pop3": "AUTH", "imap": "AUTHENTICATE"}
# verbs a refused SASL exchange's blind answers are told from: after the refusal, a line that
# is one of these (or has a space in it) is the script's next command, not an answer
_VERBS = frozenset(
    {
        *("HELO", "EHLO", "LHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY"),
        *("EXPN", "HELP", "STARTTLS", "AUTH", "ETRN", "USER", "PASS", "APOP", "STAT", "LIST"),
        *("RETR", "DELE", "TOP", "UIDL", "CAPA", "STLS", "DONE", "LOGOUT", "CAPABILITY"),
    }
)
_ANSWER = re.compile(r"[A-Za-z0-9+/]*={0,2}|\*")  # a SASL answer: base64, '=' (empty) or '*'
_IMAP_STRING = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|\{(\d+)\+?\}|([^\s"{]+))')


def escape_template(text: str) -> str:
    """Literal text safe in a templated scenario string: a `{{` would start a template."""
    return text.replace("{{", '{{ "{{" }}')


def b64decode_text(text: str) -> str | None:
    try:
        return base64.b64decode(text.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None


class Credentials:
    """Replaces credentials in client lines, one line at a time, in the order they were sent.
    Told each server reply (`replied`) so it knows when a SASL exchange goes on or ends."""

    def __init__(self, protocol: str, passwords: list[str] | None = None):
        self.protocol = protocol
        self.secrets: list[str] = []  # env names to list under `secrets:`
        self.uses_user = False
        self.warnings: list[str] = []
        self._seen: set[str] = set()  # secret values met so far (to replace them anywhere)
        # the distinct passwords, in the order they were sent (shared by a transcript's sessions,
        # so MAIL_PASSWORD_2 is the same password in all of them)
        self._passwords: list[str] = [] if passwords is None else passwords
        self._mechanism: str | None = None  # the SASL exchange in progress
        self._answers = 0  # answers given in it
        self._challenge: str | None = None  # the decoded text of its last challenge
        self._refused: str | None = None  # the mechanism of an exchange the server ended early
        self._unanswered = 0  # answers a blind script still sends for it

    @property
    def challenge(self) -> str:
        """The decoded text of the last SASL challenge ('' when none)."""
        return self._challenge or ""

    # ------------------------------------------------------------------ the public side
    def replace(self, line: str) -> tuple[str, bool]:
        """(the line as a scenario may keep it, with literal text escaped for templates;
        whether it holds a secret)."""
        if self._mechanism is not None:
            return self._sasl_answer(line), True
        if self._unanswered and not _looks_like_answer(line):
            self._unanswered = 0  # the script went on with its commands
        if self._unanswered:  # a refused AUTH in a blind script: its answers still come
            self._mechanism, self._unanswered = self._refused, self._unanswered - 1
            text = self._sasl_answer(line)
            self._mechanism = None
            return text, True
        words = line.split(None, 2)
        verb = words[0].upper() if words else ""
        sasl = _SASL_COMMANDS.get(self.protocol)
        if verb == sasl and len(words) >= 2:
            return self._sasl_start(words), self._mechanism is not None or len(words) > 2
        if self.protocol == "pop3" and verb in ("USER", "PASS", "APOP") and len(words) >= 2:
            return self._pop3(verb, line), verb != "USER"
        if self.protocol == "imap" and verb == "LOGIN" and len(words) >= 2:
            return self._imap_login(line), True
        return self.scrub(line)

    def replied(self, code: str | None, text: str) -> None:
        """The server's reply to the last line: a challenge keeps a SASL exchange going,
        anything else ends it."""
        if self._mechanism is None:
            return
        if code in ("334", "+"):
            self._challenge = b64decode_text(text) if text.strip() else ""
        else:
            # the exchange is over; a script that sends blind still sends the answers it planned
            # (after a refused `AUTH LOGIN`, the user's and the password's base64): those lines
            # are credentials all the same
            self._refused = self._mechanism
            self._unanswered = max(0, _ANSWERS.get(self._mechanism, 0) - self._answers)
            self._mechanism = None

    # ------------------------------------------------------------------ SASL
    def _sasl_start(self, words: list[str]) -> str:
        mech = words[1].upper()
        self._mechanism, self._answers, self._challenge = mech, 0, None
        if len(words) == 2:
            return escape_template(" ".join(words))
        initial = words[2].strip()
        return f"{words[0]} {words[1]} {self._sasl_value(initial)}"

    def _sasl_answer(self, line: str) -> str:
        if line.strip() == "*":  # the client cancels the exchange
            return "*"
        return self._sasl_value(line.strip())

    def _sasl_value(self, value: str) -> str:
        """The template for one SASL answer (base64 on the wire; '=' is an empty answer)."""
        mech = self._mechanism or ""
        self._answers += 1
        if value == "=":
            return value
        decoded = None if value == MASK else b64decode_text(value)
        if mech == "PLAIN":
            parts = decoded.split("\0") if decoded is not None else None
            var = self._saw_secret(parts[2]) if parts is not None and len(parts) == 3 else "MAIL_PASSWORD"
            self._replaced("the AUTH PLAIN answer", "{{ auth_plain(env.MAIL_USER, env.MAIL_PASSWORD) }}")
            self._secret(f"env.{var}")
            return _auth_plain(var)
        if mech == "LOGIN":
            asks = (self._challenge or "").lower()
            is_user = "user" in asks or (not asks and self._answers == 1)
            var = self._saw_secret(decoded) if not is_user and decoded is not None else "MAIL_PASSWORD"
            self._replaced(
                "the AUTH LOGIN answers", "{{ env.MAIL_USER | b64 }} and {{ env.MAIL_PASSWORD | b64 }}"
            )
            if is_user:
                self.uses_user = True
                return "{{ env.MAIL_USER | b64 }}"
            self._secret(f"env.{var}")
            return _env(var, " | b64")
        if mech == "XOAUTH2":
            token = re.search(r"auth=Bearer (\S+)", decoded or "")
            if token:
                self._saw_secret(token.group(1))
            self.uses_user = True
            self._secret("env.MAIL_TOKEN")
            self._replaced("the XOAUTH2 answer", "{{ xoauth2(env.MAIL_USER, env.MAIL_TOKEN) }}")
            return "{{ xoauth2(env.MAIL_USER, env.MAIL_TOKEN) }}"
        name = f"env.MAIL_SASL_RESPONSE_{self._answers}"
        self._secret(name)
        self._warn(
            f"{mech} answers depend on the server's challenge: they were replaced by "
            "{{ env.MAIL_SASL_RESPONSE_N }} and the scenario cannot replay this login as recorded"
        )
        return "{{ " + name + " }}"

    # ------------------------------------------------------------------ POP3 and IMAP logins
    def _pop3(self, verb: str, line: str) -> str:
        word = line.split(None, 1)[0]
        if verb == "USER":
            self.uses_user = True
            return f"{word} {USER}"
        if verb == "PASS":
            var = self._saw_secret(line.split(None, 1)[1])
            self._replaced("the POP3 USER/PASS login", "{{ env.MAIL_USER }} and {{ env.MAIL_PASSWORD }}")
            return f"{word} {_env(var)}"
        self.uses_user = True  # APOP user digest: the digest depends on the greeting's timestamp
        name = "env.MAIL_APOP_DIGEST"
        self._secret(name)
        self._warn(
            "APOP's digest depends on the server's greeting: it was replaced by {{ env.MAIL_APOP_DIGEST }}"
        )
        return f"{word} {USER} {{{{ {name} }}}}"

    def _imap_login(self, line: str) -> str:
        """LOGIN user password: the form of each (atom or quoted) is kept; a literal becomes a
        quoted string (its length would change with the password)."""
        word, rest = line.split(None, 1)
        args = []
        pos = 0
        for _ in range(2):
            m = _IMAP_STRING.match(rest, pos)
            if not m:
                break
            args.append(m)
            pos = m.end()
        var = "MAIL_PASSWORD"
        if len(args) == 2:
            password = args[1].group(1) if args[1].group(1) is not None else args[1].group(3)
            if password is not None and password != MASK:
                var = self._saw_secret(re.sub(r"\\(.)", r"\1", password))
        quoted = [m.group(3) is None for m in args] + [True, True]
        self.uses_user = True
        self._replaced("the IMAP LOGIN", "{{ env.MAIL_USER }} and {{ env.MAIL_PASSWORD }}")
        user = f'"{USER}"' if quoted[0] else USER
        password = f'"{_env(var)}"' if quoted[1] else _env(var)
        return f"{word} {user} {password}"

    # ------------------------------------------------------------------ any other line
    def _plain_blobs(self, text: str) -> tuple[str, bool]:
        """Base64 tokens that decode to an AUTH PLAIN answer (`authzid\\0user\\0password`), wherever
        they stand: replaced, their password learnt."""
        found = False

        def one(m: re.Match) -> str:
            nonlocal found
            decoded = b64decode_text(m.group(0))
            parts = decoded.split("\0") if decoded is not None else []
            if len(parts) != 3:
                return m.group(0)
            found = True
            return _auth_plain(self._saw_secret(parts[2]))

        return _B64_TOKEN.sub(one, text), found

    def scrub(self, line: str) -> tuple[str, bool]:
        """Any other line: literal `{{` escaped, an AUTH PLAIN blob and every password met so
        far (plain or base64) replaced by its template."""
        text, found = self._plain_blobs(escape_template(line))
        for value in sorted(self._seen, key=len, reverse=True):
            b64 = base64.b64encode(value.encode()).decode()
            var = self._variable(value)
            for form, template in ((value, _env(var)), (b64, _env(var, " | b64"))):
                text, n = _as_word(form).subn(lambda _m, t=template: t, text)
                found = found or n > 0
        return text, found

    def _saw_secret(self, value: str) -> str:
        """Learn a password that was sent: -> the environment variable that stands for it."""
        var = "MAIL_PASSWORD"
        if value and value != MASK:
            self._seen.add(value)
            if value not in self._passwords:
                self._passwords.append(value)
            var = self._variable(value)
            if len(self._passwords) > 1:
                self._warn(
                    "different passwords were sent (a refused login, then another?): each has its "
                    "own variable, MAIL_PASSWORD, MAIL_PASSWORD_2, ... in the order they were sent"
                )
        self._secret(f"env.{var}")
        return var

    def _variable(self, value: str) -> str:
        n = self._passwords.index(value) + 1 if value in self._passwords else 1
        return "MAIL_PASSWORD" if n == 1 else f"MAIL_PASSWORD_{n}"

    def _secret(self, name: str) -> None:
        if name not in self.secrets:
            self.secrets.append(name)

    def _replaced(self, what: str, by: str) -> None:
        self._warn(f"{what} {'were' if what.endswith('s') else 'was'} not written: the scenario has {by}")
        if "MAIL_PASSWORD" in by:
            self._secret("env.MAIL_PASSWORD")
        if "MAIL_USER" in by:
            self.uses_user = True

    def _warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def redact(self, text: str) -> str:  # (display only: every occurrence, as a run masks)
        """Text for display: every secret value seen so far (and its base64) as ****."""
        for value in sorted(self._seen, key=len, reverse=True):
            text = text.replace(value, MASK).replace(base64.b64encode(value.encode()).decode(), MASK)
        return text


def _looks_like_answer(line: str) -> bool:
    """Could a line a blind script sends after a refused SASL exchange be one of its planned
    answers (one base64 token, `=` or `*`), rather than its next command?"""
    text = line.strip()
    return bool(_ANSWER.fullmatch(text)) and text.upper() not in _VERBS


def _as_word(value: str) -> re.Pattern:
    """Where `value` stands as a word of a line: not inside a longer word (nor, for a value
    shorter than MIN_LENGTH, touching anything but spaces)."""
    if len(value) < MIN_LENGTH:
        return re.compile(r"(?<!\S)" + re.escape(value) + r"(?!\S)")
    return re.compile(r"(?<![\w+/=])" + re.escape(value) + r"(?![\w+/=])")


def _env(name: str, filters: str = "") -> str:
    """The template of an environment variable: `{{ env.MAIL_PASSWORD }}`, `{{ env.X | b64 }}`."""
    return "{{ env." + name + filters + " }}"


def _auth_plain(password_var: str) -> str:
    """The template of an AUTH PLAIN answer for the user and that password's variable."""
    return "{{ auth_plain(env.MAIL_USER, env." + password_var + ") }}"
