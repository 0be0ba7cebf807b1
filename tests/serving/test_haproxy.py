"""HAProxy's configuration as generated: stickiness, health checks, websockets, the public
address; HAProxy itself accepts it; its stat CSV is read; a missing HAProxy says how to install it."""

from __future__ import annotations

from pathlib import Path

import pytest

from carlos.errors import InvalidInputError
from carlos.serving import haproxy
from carlos.serving.haproxy import Backend, ProxyMissingError, ProxySettings, check_config, haproxy_config, parse_stat_csv

BACKENDS = [Backend("s1", 40001), Backend("s2", 40002)]


def _lines(text: str) -> list[str]:
    return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]


def test_config_pins_browsers_with_a_cookie_and_checks_health() -> None:
    lines = _lines(haproxy_config(BACKENDS, ProxySettings(port=9000)))
    assert "bind 127.0.0.1:9000" in lines  # loopback unless asked otherwise
    assert "cookie SRV insert indirect nocache httponly" in lines
    assert "server s1 127.0.0.1:40001 cookie s1" in lines and "server s2 127.0.0.1:40002 cookie s2" in lines
    assert "http-check send meth GET uri /_stcore/health" in lines and "http-check expect status 200" in lines
    assert "default-server check inter 1000ms fall 2 rise 1" in lines
    assert "option redispatch" in lines  # a pinned browser whose server is down goes to another
    assert "timeout tunnel 3600s" in lines  # websockets stay open while idle
    assert "balance leastconn" in lines
    assert not any(line.startswith("stats socket") for line in lines)


def test_config_options() -> None:
    text = haproxy_config(BACKENDS, ProxySettings(host="0.0.0.0", port=8080, check_interval_ms=250, stats_socket="/tmp/x.sock"))
    lines = _lines(text)
    assert "bind 0.0.0.0:8080" in lines and "default-server check inter 250ms fall 2 rise 1" in lines
    assert "stats socket /tmp/x.sock mode 600 level admin" in lines
    assert "bind ipv6@::1:8080" in _lines(haproxy_config(BACKENDS, ProxySettings(host="::1", port=8080)))
    assert "timeout client 1500ms" in _lines(haproxy_config(BACKENDS, ProxySettings(client_timeout_s=1.5)))


@pytest.mark.parametrize(
    ("backends", "settings", "message"),
    [
        ([], None, "at least one backend"),
        ([Backend("s1", 1), Backend("s1", 2)], None, "distinct"),
        ([Backend("s 1", 1)], None, "identifiers"),
        (BACKENDS, {"port": 0}, "port"),
        (BACKENDS, {"fall": 0}, "positive"),
    ],
)
def test_config_refuses_bad_input(backends: list[Backend], settings: dict | None, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        haproxy_config(backends, ProxySettings(**settings) if settings else None)


def test_haproxy_accepts_the_generated_config(tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_config(BACKENDS, ProxySettings(port=9000, stats_socket=str(tmp_path / "s.sock"))))
    check_config(cfg)
    cfg.write_text(cfg.read_text().replace("balance leastconn", "balance nonsense"))
    with pytest.raises(InvalidInputError, match="HAProxy refused"):
        check_config(cfg)


def test_stat_csv_gives_each_servers_status() -> None:
    csv = (
        "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight\n"
        "carlos,FRONTEND,,,0,1,4096,3,0,0,0,0,0,,,,,OPEN,\n"
        "streamlit,s1,0,0,0,1,,2,0,0,,0,,0,0,0,0,UP,1\n"
        "streamlit,s2,0,0,0,1,,1,0,0,,0,,0,0,0,0,DOWN,1\n"
        "streamlit,BACKEND,0,0,0,1,410,3,0,0,0,0,,0,0,0,0,UP,1\n"
    )
    assert parse_stat_csv(csv) == {"s1": "UP", "s2": "DOWN"}
    with pytest.raises(InvalidInputError):
        parse_stat_csv("Unknown command\n")


def test_a_missing_haproxy_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(haproxy.shutil, "which", lambda _: None)
    monkeypatch.setattr(haproxy, "DEBIAN_HAPROXY", str(tmp_path / "no-haproxy"))
    with pytest.raises(ProxyMissingError, match="make haproxy"):
        haproxy.find_haproxy()
