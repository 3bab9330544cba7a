"""The Spark Connect URL options icefeed documents (ICEFEED_SPARK_URL), as the pyspark client
icefeed pins reads them: token, user_id, use_ssl, and any other parameter sent as a gRPC header
(what gateways that route on headers need)."""

from __future__ import annotations

from pyspark.sql.connect.client.core import DefaultChannelBuilder

from worker.observability.logging import Redactor, settings_secrets
from worker.settings import load_settings


def test_url_parameters_reach_the_client_and_unknown_ones_become_headers() -> None:
    builder = DefaultChannelBuilder("sc://spark.example:443/;token=s3cr3t;user_id=etl;use_ssl=true;x-route=team-a")
    assert builder.endpoint == "spark.example:443"
    assert (builder.token, builder.userId, builder.secure) == ("s3cr3t", "etl", True)
    assert builder.metadata() == [("x-route", "team-a")]


def test_the_token_in_the_url_is_a_secret_that_logs_never_show(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ICEFEED_SPARK_URL", "sc://spark.example:443/;token=s3cr3t-tok;x-route=a")
    settings = load_settings()
    assert "s3cr3t-tok" not in repr(settings) and "s3cr3t-tok" not in str(settings.spark)
    redactor = Redactor(settings_secrets(settings))
    assert "s3cr3t-tok" not in redactor.scrub(f"connecting to {settings.spark.url.get_secret_value()}")
