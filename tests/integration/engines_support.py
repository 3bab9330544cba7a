"""A second "team cluster" for the engines tests: a Sail server of its own, and a gRPC gate in
front of it that accepts only the bearer token currently in a file (Sail itself checks no token,
as a cluster behind a token-checking gateway would)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from tests.harness import poll
from worker.localstack import Stack, _tcp_open, free_port

#: Spark Connect's methods and their shapes (request stream?, response stream?).
METHODS = {
    "ExecutePlan": (False, True),
    "AnalyzePlan": (False, False),
    "Config": (False, False),
    "AddArtifacts": (True, False),
    "ArtifactStatus": (False, False),
    "Interrupt": (False, False),
    "ReattachExecute": (False, True),
    "ReleaseExecute": (False, False),
    "ReleaseSession": (False, False),
    "FetchErrorDetails": (False, False),
}
SERVICE = "spark.connect.SparkConnectService"


class TeamCluster:
    """A Sail server on its own port (kill / restart it), optionally behind a token gate."""

    def __init__(self, stack: Stack, workdir: Path) -> None:
        self.stack = stack
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self) -> TeamCluster:
        self._log = open(self.workdir / f"sail-team-{self.port}.log", "ab")  # noqa: SIM115
        argv = [str(Path(self.stack_bin("sail"))), "spark", "server", "--ip", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(argv, env=self.stack.sail_env(), stdout=self._log, stderr=subprocess.STDOUT)
        poll(lambda: _tcp_open(self.port), 30, "the team's Sail server to listen")
        return self

    @staticmethod
    def stack_bin(name: str) -> str:
        from worker.localstack import _bin

        return _bin(name)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._log is not None:
            self._log.close()

    @property
    def url(self) -> str:
        return f"sc://127.0.0.1:{self.port}"


class TokenGate:
    """gRPC pass-through to ``target`` that answers UNAUTHENTICATED unless the call carries
    ``authorization: Bearer <the token in token_file now>``. Listens with local credentials, the
    ones pyspark uses for ``sc://localhost:…/;token=…`` without TLS."""

    def __init__(self, target: str, token_file: Path) -> None:
        self.token_file = token_file
        self.channel = grpc.insecure_channel(target)
        self.port = free_port()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self.server.add_generic_rpc_handlers([_Handler(self)])
        self.server.add_secure_port(
            f"localhost:{self.port}", grpc.local_server_credentials(grpc.LocalConnectionType.LOCAL_TCP)
        )
        self.refused = 0

    def start(self) -> TokenGate:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(grace=None)
        self.channel.close()

    @property
    def url(self) -> str:
        return f"sc://localhost:{self.port}"

    def allowed(self, context: grpc.ServicerContext) -> bool:
        expected = f"Bearer {self.token_file.read_text().strip()}"
        if dict(context.invocation_metadata()).get("authorization") == expected:
            return True
        self.refused += 1
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token")
        return False


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, gate: TokenGate) -> None:
        self.gate = gate

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        service, _, method = details.method.lstrip("/").partition("/")
        if service != SERVICE or method not in METHODS:
            return None
        streams_in, streams_out = METHODS[method]
        ident: Callable[[bytes], bytes] = lambda b: b  # noqa: E731 - raw bytes both ways
        forward = {
            (False, False): self.gate.channel.unary_unary,
            (False, True): self.gate.channel.unary_stream,
            (True, False): self.gate.channel.stream_unary,
        }[(streams_in, streams_out)](details.method, request_serializer=ident, response_deserializer=ident)
        meta = lambda ctx: [(k, v) for k, v in ctx.invocation_metadata() if k != "authorization"]  # noqa: E731

        def relay(error: grpc.RpcError, ctx: grpc.ServicerContext) -> None:
            """The engine's own status, details and trailers (Spark's error details ride there)."""
            call: Any = error
            ctx.set_trailing_metadata(call.trailing_metadata() or ())
            ctx.abort(call.code(), call.details() or "")

        def unary(request: bytes, ctx: grpc.ServicerContext) -> Any:
            self.gate.allowed(ctx)
            try:
                return forward(request, metadata=meta(ctx))
            except grpc.RpcError as error:
                relay(error, ctx)

        def unary_stream(request: bytes, ctx: grpc.ServicerContext) -> Iterator[bytes]:
            self.gate.allowed(ctx)
            try:
                yield from forward(request, metadata=meta(ctx))
            except grpc.RpcError as error:
                relay(error, ctx)

        def stream_unary(requests: Iterator[bytes], ctx: grpc.ServicerContext) -> Any:
            self.gate.allowed(ctx)
            try:
                return forward(requests, metadata=meta(ctx))
            except grpc.RpcError as error:
                relay(error, ctx)

        kinds = {
            (False, False): grpc.unary_unary_rpc_method_handler(unary, ident, ident),
            (False, True): grpc.unary_stream_rpc_method_handler(unary_stream, ident, ident),
            (True, False): grpc.stream_unary_rpc_method_handler(stream_unary, ident, ident),
        }
        return kinds[(streams_in, streams_out)]
