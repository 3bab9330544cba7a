"""The Spark Connect URLs icefeed documents (ICEFEED_SPARK_URL) and the ones it builds from them
(a session's URL), as the pyspark client icefeed pins reads them: token, user_id, use_ssl,
session_id, and any other parameter sent as a gRPC header (what gateways that route on headers
need); the settings read the parameters the same way."""

from __future__ import annotations

import uuid

import pytest
from pyspark.sql.connect.client.core import DefaultChannelBuilder

from worker.adapters.spark_sink import session_url
from worker.observability.logging import Redactor, settings_secrets
from worker.settings import load_settings, spark_url_params

URL = "sc://spark.example:443/;token=s3cr3t;user_id=etl;use_ssl=true;x-route=team-a"


def test_a_session_url_keeps_every_parameter_and_adds_the_session() -> None:
    session_id = str(uuid.uuid4())
    builder = DefaultChannelBuilder(session_url(URL, session_id))
    assert builder.endpoint == "spark.example:443"
    assert (builder.token, builder.userId, builder.secure) == ("s3cr3t", "etl", True)
    assert builder.session_id == session_id
    assert builder.metadata() == [("x-route", "team-a")]  # unknown parameters become headers


@pytest.mark.parametrize("url", ["sc://spark.example:15002", "sc://spark.example:15002/"])
def test_a_session_url_of_a_bare_url(url: str) -> None:
    session_id = str(uuid.uuid4())
    builder = DefaultChannelBuilder(session_url(url, session_id))
    assert (builder.endpoint, builder.session_id, builder.token) == ("spark.example:15002", session_id, None)
    assert builder.metadata() == []


def test_a_session_url_refuses_a_url_that_names_a_session_and_ids_that_are_not_uuids() -> None:
    with pytest.raises(ValueError, match="already names a session"):
        session_url(URL + ";session_id=" + str(uuid.uuid4()), str(uuid.uuid4()))
    with pytest.raises(ValueError):
        session_url(URL, "not-a-uuid")


@pytest.mark.parametrize("url", [URL, "sc://h:1/;token=a%3Bb%3Dc;user_id=x%20y", "sc://h:1"])
def test_the_settings_read_url_parameters_as_the_client_does(url: str) -> None:
    params = spark_url_params(url)
    builder = DefaultChannelBuilder(url)
    assert params.get("token") == builder.token
    assert params.get("user_id") == builder.userId
    assert [(k, v) for k, v in params.items() if k not in ("token", "user_id", "use_ssl")] == builder.metadata()


def test_the_token_in_the_url_is_a_secret_that_logs_never_show(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ICEFEED_SPARK_URL", "sc://spark.example:443/;token=s3cr3t-tok;x-route=a")
    settings = load_settings()
    assert "s3cr3t-tok" not in repr(settings) and "s3cr3t-tok" not in str(settings.spark)
    redactor = Redactor(settings_secrets(settings))
    assert "s3cr3t-tok" not in redactor.scrub(f"connecting to {settings.spark.url.get_secret_value()}")
