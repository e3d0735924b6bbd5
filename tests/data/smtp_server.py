"""A real SMTP server for the email tests (aiosmtpd): STARTTLS (or TLS from
the first byte with --implicit), AUTH PLAIN/LOGIN required over TLS, and
every mail it takes written as one JSON line to --out: the envelope,
whether it came over TLS, who logged in, and the message as sent.
--fail N answers the first N mails with --code (451: try later, 550: no).
Prints "ready" once it listens; runs until killed."""

import argparse
import json
import ssl
import logging
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--cert", required=True)
parser.add_argument("--key", required=True)
parser.add_argument("--user", required=True)
parser.add_argument("--password", required=True)
parser.add_argument("--out", required=True)
parser.add_argument("--implicit", action="store_true")
parser.add_argument("--fail", type=int, default=0)
parser.add_argument("--code", default="451 4.3.0 try again later")
args = parser.parse_args()

# aiosmtpd warns of its own use of a deprecated field on every login.
logging.getLogger("mail.log").setLevel(logging.ERROR)
lock = threading.Lock()


class Handler:
    def __init__(self):
        self.failing = args.fail

    async def handle_DATA(self, server, session, envelope):
        with lock:
            if self.failing > 0:
                self.failing -= 1
                return args.code
            record = {
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                # With --implicit the server speaks only TLS.
                "tls": args.implicit or session.ssl is not None,
                "user": session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None,
                "data": envelope.content.decode("utf-8", "replace"),
            }
            with open(args.out, "a") as out:
                out.write(json.dumps(record) + "\n")
        return "250 2.0.0 queued"


def authenticate(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == args.user
        and auth_data.password.decode() == args.password
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(args.cert, args.key)
common = dict(hostname="127.0.0.1", port=args.port, authenticator=authenticate)
if args.implicit:
    # aiosmtpd counts only STARTTLS as TLS for AUTH; this socket is TLS.
    controller = Controller(Handler(), ssl_context=context, auth_require_tls=False, **common)
else:
    controller = Controller(Handler(), tls_context=context, require_starttls=True, auth_require_tls=True, **common)
controller.start()
print("ready", flush=True)
threading.Event().wait()
