"""A loopback SMTP server for development and tests (BO-05-006's mail).

It accepts every message and stores it, as received, in DIR as one .eml
file per message (written to a temporary name, then renamed, so a reader
never sees half a file), with two headers added at the top:
X-Sink-Mail-From and X-Sink-Rcpt-To (the SMTP envelope). It can refuse
chosen recipients with 550, as a real server refuses an unknown mailbox:
the addresses given with --refuse, and those listed one per line in
DIR/refuse, read again at every RCPT (so a running sink can start or stop
refusing). With --auth USER:PASSWORD it requires AUTH (PLAIN/LOGIN, allowed
without TLS: this is a loopback test server); with --tls-cert/--tls-key it
offers STARTTLS.

Once listening it prints, and flushes:
    SMTP_URL=smtp://HOST:PORT
    SMTP_MAILDIR=DIR
(--port 0 picks a free port: read it from that line.)

Needs aiosmtpd (PyPI); scripts/services installs it into a virtualenv
under /var/tmp/aidt-batch-smtp and runs this with that virtualenv's python.

    python smtp-sink.py --port 2525 --dir /var/tmp/aidt-batch-smtp/mail
"""

import argparse
import asyncio
import itertools
import os
import signal
import ssl
import sys
import time
import uuid

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def parse_args():
    p = argparse.ArgumentParser(description="loopback SMTP sink: stores every message as an .eml file")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=2525, help="0: a free port")
    p.add_argument("--dir", required=True, help="where the .eml files go (created if missing)")
    p.add_argument("--refuse", action="append", default=[], metavar="ADDRESS",
                   help="answer RCPT TO:<ADDRESS> with 550 (repeatable; DIR/refuse is read too)")
    p.add_argument("--auth", metavar="USER:PASSWORD", help="require AUTH with these credentials")
    p.add_argument("--tls-cert", help="PEM certificate: offer STARTTLS")
    p.add_argument("--tls-key", help="PEM key of --tls-cert")
    return p.parse_args()


class Sink:
    def __init__(self, directory, refused):
        self.directory = directory
        self.refused = {a.lower() for a in refused}
        self.counter = itertools.count(1)

    def refuses(self, address):
        listed = set()
        try:
            with open(os.path.join(self.directory, "refuse"), encoding="utf-8") as f:
                listed = {line.strip().lower() for line in f if line.strip()}
        except FileNotFoundError:
            pass
        return address.lower() in self.refused | listed

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuses(address):
            return f"550 5.1.1 <{address}>: Recipient address rejected: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        name = "%s-%05d-%s.eml" % (time.strftime("%Y%m%dT%H%M%S"), next(self.counter), uuid.uuid4().hex[:8])
        head = "X-Sink-Mail-From: <%s>\r\nX-Sink-Rcpt-To: %s\r\n" % (
            envelope.mail_from, ", ".join("<%s>" % r for r in envelope.rcpt_tos))
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8")
        tmp = os.path.join(self.directory, "." + name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(head.encode("ascii", "replace"))
            f.write(content)
        os.replace(tmp, os.path.join(self.directory, name))
        return "250 2.0.0 OK: stored as " + name


def main():
    args = parse_args()
    os.makedirs(args.dir, exist_ok=True)
    sink = Sink(args.dir, args.refuse)

    options = {"decode_data": False, "hostname": "aidt-smtp-sink"}
    if args.auth:
        user, _, password = args.auth.partition(":")

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (isinstance(auth_data, LoginPassword)
                  and auth_data.login.decode() == user and auth_data.password.decode() == password)
            # handled=False: aiosmtpd answers a failure with 535 itself
            return AuthResult(success=ok, handled=False)

        options.update(authenticator=authenticator, auth_required=True, auth_require_tls=False)
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        options.update(tls_context=context, require_starttls=True)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        loop.create_server(lambda: SMTP(sink, loop=loop, **options), host=args.host, port=args.port))
    port = server.sockets[0].getsockname()[1]
    print("SMTP_URL=smtp://%s:%d" % (args.host, port), flush=True)
    print("SMTP_MAILDIR=%s" % os.path.abspath(args.dir), flush=True)
    # Nothing more goes to stdout: whoever read those lines may close it.
    sys.stdout = open(os.devnull, "w")
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, loop.stop)
    try:
        loop.run_forever()
    finally:
        server.close()
        loop.run_until_complete(server.wait_closed())
    return 0


if __name__ == "__main__":
    sys.exit(main())
