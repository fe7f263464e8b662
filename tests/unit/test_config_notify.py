"""``notify:`` in the config: the URL only from a secret source and never shown."""

from __future__ import annotations

from typing import Any

import pytest

from relay.config import from_mapping
from relay.errors import ConfigError

ROUTES = [{"name": "r", "path": "/r", "upstream": "http://127.0.0.1:3000/"}]
SECRET = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"


def load(notify: Any, env: dict[str, str] | None = None) -> Any:
    return from_mapping({"routes": ROUTES, "notify": notify}, env=env or {"HOOK": SECRET})


def errors(notify: Any, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(notify, env)
    return list(info.value.errors)


def test_targets_take_their_url_from_a_secret_and_never_show_it() -> None:
    cfg = load([{"url_env": "HOOK", "format": "slack", "interval": "30m", "name": "chat"}])
    (t,) = cfg.notify
    assert (t.name, t.format, t.interval, t.backlog_age) == ("chat", "slack", 1800.0, 600.0)
    assert t.url == SECRET and "SECRET" not in repr(cfg)
    assert load([{"url_env": "HOOK"}]).notify[0].name == "notify-0"


def test_mistakes_are_named_and_the_url_never_appears() -> None:
    assert errors([{"url": SECRET}]) == [
        "notify[0].url: a notification URL is a secret: use url_env, url_file or url_credential"
    ]
    assert errors([{"url_env": "HOOK", "format": "teams"}])[0].startswith("notify[0].format:")
    assert errors([{}]) == ["notify[0]: needs url_env, url_file or url_credential"]
    (bad,) = errors([{"url_env": "HOOK"}], env={"HOOK": "ftp://nope/" + "SECRET"})
    assert "SECRET" not in bad and bad.startswith("notify[0].url_env: expected an http")
    assert errors([{"url_env": "HOOK", "name": "a"}, {"url_env": "HOOK", "name": "a"}]) == [
        "notify: name 'a' is used twice"
    ]
    assert errors({"url_env": "HOOK"})[0].startswith("notify: expected a list")
