"""PostgreSQL going away under a running server and coming back (issue 19's faults): with the
job store in PostgreSQL, reading jobs answers a clear 503 problem while the database cannot be
reached, and works again, with nothing lost, once it is back. The cut is a TCP proxy of the
test's own between the server and PostgreSQL, so no other test's database goes away."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from fastapi.testclient import TestClient

from offmaps.server.app import create_app
from offmaps.settings import ServerSettings
from tests.jobs.test_jobs import wait
from tests.server.test_offline_access import BODY
from tests.serverkit import Server, assert_problem


class CuttableProxy:
    """Forwards TCP connections from a loopback port to ``target``; :meth:`cut` closes the
    port and every connection through it, :meth:`restore` opens the port again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # cut
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                end.close()

    def cut(self) -> None:
        if self._listener is not None:
            # a close alone leaves a socket that a thread waits in accept() on listening
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for found in self._sockets:
                with contextlib.suppress(OSError):
                    found.shutdown(socket.SHUT_RDWR)
                found.close()
            self._sockets.clear()


@pytest.fixture
def postgres_url() -> str:
    url = os.environ.get("OFFMAPS_TEST_POSTGRES_URL")
    if not url:
        pytest.fail(
            "OFFMAPS_TEST_POSTGRES_URL is not set: run the tests with `make test`, which starts "
            "PostgreSQL (scripts/services.sh)"
        )
    return url


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[CuttableProxy]:
    parts = urlsplit(postgres_url)
    found = CuttableProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    yield found
    found.cut()


def test_jobs_answer_503_while_postgresql_is_away_and_work_once_it_is_back(
    server: Server, postgres_url: str, proxy: CuttableProxy
) -> None:
    parts = urlsplit(postgres_url)
    through = parts._replace(netloc=parts.netloc.replace(f":{parts.port}", f":{proxy.port}"))
    settings = ServerSettings(
        data_dir=server.data_dir,
        database_url=urlunsplit(through),
        database_schema=f"faults_{uuid.uuid4().hex[:12]}",
        database_migrate=True,
    )
    editor = server.token("editor")
    with TestClient(create_app(settings)) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        started = client.post(
            f"/api/maps/{server.public_map}/offline/jobs", json=BODY, headers=editor
        )
        assert started.status_code == 201, started.text
        job_id = started.json()["id"]
        assert wait(services.jobs, job_id).error is None

        proxy.cut()
        away = assert_problem(client.get(f"/api/jobs/{job_id}", headers=editor), 503)
        assert "PostgreSQL" in away["detail"] or "database" in away["detail"]

        proxy.restore()
        back = client.get(f"/api/jobs/{job_id}", headers=editor)
        assert back.status_code == 200, back.text
        assert back.json()["status"] == "succeeded"
        services.close()
