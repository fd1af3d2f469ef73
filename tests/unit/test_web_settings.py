"""The Dashboard settings group: read by config.Settings, errors that name the variable, and the
default masked fields in step with the outpass model."""

from __future__ import annotations

import dataclasses

import pytest

from passito_jobs.config import Settings
from passito_jobs.outpass.model import Outpass
from passito_jobs.settings import ConfigError
from passito_jobs.web.settings import DEFAULT_MASK_FIELDS, WebSettings

PERSONAL = ("name", "email", "roll", "room", "phone")


def test_the_masked_fields_cover_every_personal_field_of_an_outpass() -> None:
    personal = {f.name for f in dataclasses.fields(Outpass) if any(word in f.name for word in PERSONAL)}
    assert personal, "the outpass model has no personal field any more: update PERSONAL"
    assert personal <= set(DEFAULT_MASK_FIELDS)


def test_config_reads_the_dashboard_group() -> None:
    settings = Settings.from_env({"PASSITO_WEB_PORT": "9999", "PASSITO_WEB_AUTH": "none"})
    assert settings.web.port == 9999
    assert settings.web.auth == ()
    assert settings.web.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"PASSITO_WEB_PORT": "NaN"}, "PASSITO_WEB_PORT: 'NaN' is not a whole number"),
        ({"PASSITO_WEB_PORT": "9" * 5000}, "PASSITO_WEB_PORT: "),
        ({"PASSITO_WEB_PORT": "-1"}, "PASSITO_WEB_PORT must be a port number or 0"),
        ({"PASSITO_WEB_HOST": "  "}, "PASSITO_WEB_HOST must not be empty"),
        ({"PASSITO_WEB_HEADER_ROLE": "root"}, "PASSITO_WEB_HEADER_ROLE must be viewer or admin"),
        ({"PASSITO_WEB_QUERY_TIMEOUT": "0"}, "PASSITO_WEB_QUERY_TIMEOUT must be positive"),
        ({"PASSITO_WEB_QUERY_TIMEOUT": "2d"}, "PASSITO_WEB_QUERY_TIMEOUT must be at most 1d"),
        ({"PASSITO_WEB_DB_CONNECTIONS": "1000"}, "PASSITO_WEB_DB_CONNECTIONS must be at most 100"),
        ({"PASSITO_WEB_AUTH": "token"}, "PASSITO_WEB_TOKENS_FILE is required by `token`"),
        ({"PASSITO_WEB_AUTH": "basic\x00"}, "is not an authentication mode"),
        ({"PASSITO_WEB_HOST": "\udcff"}, "PASSITO_WEB_HOST: is not valid UTF-8 text"),
    ],
)
def test_a_bad_value_is_one_clear_error_naming_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        WebSettings.from_env(environ)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
