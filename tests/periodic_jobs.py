"""A job module that registers a periodic job (`worker --import tests.periodic_jobs`)."""

from passito_jobs import periodic

periodic("every-second", "Noop", every="1s", payload={"from": "code"}, queue="periodic")
