"""The fake Messages API in a process of its own, for tests whose own event loop is too busy
(posting webhooks) to time the API's requests honestly.

    python -m tests.fake_api_process PORT PUBLIC_KEY.pem

`GET /recorded` lists the accepted requests: body and arrival (`time.monotonic()`, which
every process of the machine shares).
"""

from __future__ import annotations

import sys
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from tests.conftest import APPLICATION_ID
from tests.fakes import FakeMessagesApi


def main(port: int, public_key_file: Path) -> None:
    key = serialization.load_pem_public_key(public_key_file.read_bytes())
    assert isinstance(key, RSAPublicKey)
    api = FakeMessagesApi(public_key=key, application_id=APPLICATION_ID)
    app = api.app()

    async def recorded(request: web.Request) -> web.Response:
        return web.json_response(
            [{"body": r.body, "at": r.at, "arrived": r.arrived} for r in api.accepted]
        )

    app.router.add_get("/recorded", recorded)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]))
