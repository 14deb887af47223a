import sqlite3
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from feedbot.items import Item
from feedbot.store import MIGRATIONS, Store, StoreError, UpsertResult

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "db" / "feedbot.db")


def paper(version: int = 1, title: str = "Deep nets", source: str = "arXiv cs.LG") -> Item:
    return Item(title, f"https://arxiv.org/abs/2401.00001v{version}", source, "paper",
                published=NOW - timedelta(days=1), summary=f"abstract v{version}",
                arxiv_id="2401.00001", arxiv_version=version, categories=("cs.LG",))


def test_migrations_run_once_and_wal_is_on(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    s = Store(path)
    assert s.schema_version == len(MIGRATIONS)
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.upsert_items([paper()], NOW)
    s.close()
    again = Store(path)  # reopening must not re-run or lose data
    assert again.item_count() == 1


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(RuntimeError, match="newer feedbot"):
        Store(path)


def test_a_new_database_another_connection_is_writing_is_waited_for(tmp_path: Path) -> None:
    """`PRAGMA journal_mode = WAL` on a file not in WAL mode yet, while another connection
    holds its write lock, is told "database is locked" at once, whatever the busy timeout
    (SQLite skips the busy handler where waiting could deadlock). Four processes creating a
    new database at once failed so in CI ("held it for 30 s", after no time at all)."""
    path = tmp_path / "new.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    threading.Timer(0.5, other.execute, ["COMMIT"]).start()
    started = time.monotonic()
    with Store(path, timeout=10) as store:
        assert time.monotonic() - started >= 0.4  # it waited for the other connection
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.schema_version == len(MIGRATIONS)
    other.close()


def test_a_new_database_held_past_the_timeout_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    with pytest.raises(StoreError, match="is busy: another feedbot process has held it"):
        Store(path, timeout=0.3)
    assert time.monotonic() - started >= 0.3
    other.close()


def test_two_processes_creating_the_database_at_once_both_succeed(tmp_path: Path) -> None:
    """The loser of the race used to fail with 'table items already exists'."""
    import subprocess
    import sys

    path = tmp_path / "race.db"
    code = ("import sys; from feedbot.store import Store; "
            "s = Store(sys.argv[1]); print(s.schema_version); s.close()")
    for _ in range(3):
        path.unlink(missing_ok=True)
        procs = [subprocess.Popen([sys.executable, "-c", code, str(path)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
        outs = [p.communicate(timeout=60) for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outs]
        assert {out.strip() for out, _ in outs} == {str(len(MIGRATIONS))}


def test_a_migration_another_process_already_ran_is_skipped(tmp_path: Path) -> None:
    """What the race comes down to: a connection that read version 0 before another one
    migrated must find the work done once it holds the write lock."""
    path = tmp_path / "f.db"
    Store(path).close()  # the other process won the race

    class StaleFirstRead:
        """The real connection, except that the first version read is from before the race."""

        def __init__(self, db: sqlite3.Connection) -> None:
            self.db, self.stale = db, True

        def __getattr__(self, name: str) -> object:
            return getattr(self.db, name)

        def execute(self, sql: str, *args: object) -> object:
            if self.stale and sql == "PRAGMA user_version":
                self.stale = False
                return self.db.execute("SELECT 0")
            return self.db.execute(sql, *args)

    late = Store.__new__(Store)
    late.path = str(path)
    late.db = StaleFirstRead(sqlite3.connect(path, isolation_level=None))  # type: ignore[assignment]
    late._migrate()  # must not run CREATE TABLE again
    assert late.schema_version == len(MIGRATIONS)
    late.db.close()


@pytest.mark.parametrize("damage", ["random", "truncated"])
def test_a_damaged_database_is_a_clear_error_and_left_alone(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "feedbot.db"
    if damage == "random":
        path.write_bytes(bytes(range(256)) * 20)
    else:
        s = Store(path)
        s.upsert_items([paper()], NOW)
        s.close()
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    before = path.read_bytes()
    with pytest.raises(StoreError, match="damaged or not a feedbot database") as e:
        Store(path)
    assert "Move it aside" in str(e.value)
    assert path.read_bytes() == before


def test_same_paper_from_two_sources_is_one_item(store: Store) -> None:
    r1 = store.upsert_items([paper()], NOW)
    blog = Item("Blog about it", "https://arxiv.org/abs/2401.00001?utm_source=rss", "a blog")
    r2 = store.upsert_items([blog], NOW)
    assert (r1.new, r2.new) == (1, 0)
    got = store.get_item("arxiv:2401.00001")
    assert got is not None
    assert got.sources == ("arXiv cs.LG", "a blog")
    assert got.item.title == "Deep nets"  # the blog does not overwrite the paper


def test_new_arxiv_version_updates_the_row(store: Store) -> None:
    store.upsert_items([paper(1)], NOW)
    r = store.upsert_items([paper(2, title="Deeper nets")], NOW + timedelta(hours=1))
    assert (r.new, r.updated) == (0, 1)
    got = store.get_item("https://arxiv.org/abs/2401.00001v2")
    assert got is not None and got.item.title == "Deeper nets"
    assert got.item.arxiv_version == 2
    older = store.upsert_items([paper(1, title="Old")], NOW)  # an old version never wins
    assert older.updated == 0
    assert store.item_count() == 1


def test_a_blog_entry_linking_a_newer_version_never_writes_over_the_paper(store: Store
                                                                         ) -> None:
    """A blog entry whose link is `abs/<id>v2` took the paper's version number and replaced
    the paper with itself: kind post, the blog's title and text, no authors, no categories;
    and arXiv's v2, "not newer", never repaired it."""
    store.upsert_items([paper(1)], NOW)
    blog = Item("We read: deep nets", "https://arxiv.org/abs/2401.00001v2", "Paper blog", "post",
                published=NOW, summary="Our notes.", arxiv_id="2401.00001", arxiv_version=2)
    assert store.upsert_items([blog], NOW).updated == 0
    got = store.get_item("arxiv:2401.00001")
    assert got is not None and (got.item.kind, got.item.title) == ("paper", "Deep nets")
    assert got.sources == ("arXiv cs.LG", "Paper blog")  # a source more
    assert store.upsert_items([paper(2, title="Deeper nets")], NOW).updated == 1
    assert store.get_item("arxiv:2401.00001").item.title == "Deeper nets"


def test_the_paper_replaces_a_blog_entry_that_came_first(store: Store) -> None:
    """The other order: the blog's entry (v2 in its link) came first, and arXiv's v1, "not
    newer", never showed the paper's title, abstract and authors."""
    blog = Item("We read: deep nets", "https://arxiv.org/abs/2401.00001v2", "Paper blog", "post",
                published=NOW, summary="Our notes.", arxiv_id="2401.00001", arxiv_version=2)
    store.upsert_items([blog], NOW)
    assert store.upsert_items([paper(1)], NOW).updated == 1
    got = store.get_item("arxiv:2401.00001")
    assert got is not None and (got.item.kind, got.item.title) == ("paper", "Deep nets")
    assert got.item.categories == ("cs.LG",)
    assert store.upsert_items([blog], NOW).updated == 0  # and it stays the paper


def test_canonical_url_dedup(store: Store) -> None:
    a = Item("Post", "https://blog.example.org/p/1/", "blog")
    b = Item("Post", "http://www.blog.example.org/p/1?utm_medium=social#top", "other")
    store.upsert_items([a], NOW)
    assert store.upsert_items([b], NOW).new == 0
    assert store.item_count() == 1


def test_guid_dedup_when_the_link_changes(store: Store) -> None:
    a = Item("Post", "https://blog.example.org/p/1", "blog", guid="tag:blog,2026:1")
    moved = Item("Post (edited)", "https://blog.example.org/2026/p-1", "blog",
                 guid="tag:blog,2026:1")
    store.upsert_items([a], NOW)
    r = store.upsert_items([moved], NOW)
    assert (r.new, r.updated) == (0, 1)
    assert store.item_count() == 1
    got = store.get_item(a.id)
    assert got is not None and got.item.title == "Post (edited)"


def test_a_renamed_source_still_corrects_and_finds_its_own_items(store: Store) -> None:
    """After a rename in sources.yaml (the same feed), its feed was a stranger to its own
    items: an edited title was never taken, a post moved to a new link (its guid kept) was
    stored again, and an undated post with no link came back as new."""
    feed = ("feed", "https://blog.example.org/feed")
    post = Item("Post", "https://blog.example.org/p/1", "Blog", guid="tag:blog,2026:1")
    other = Item("Other", "https://blog.example.org/p/2", "Blog", guid="tag:blog,2026:2")
    linkless = Item("Undated", "", "Blog", guid="3")
    store.upsert_items([post, other, linkless], NOW)
    store.record_success("Blog", NOW)
    store.note_target("Blog", *feed)
    store.remember_sources([("My blog", *feed)])  # renamed
    r = store.upsert_items([
        Item("Post (edited)", "https://blog.example.org/p/1", "My blog", guid="tag:blog,2026:1"),
        Item("Other", "https://blog.example.org/2026/p-2", "My blog", guid="tag:blog,2026:2"),
        Item("Undated", "", "My blog", guid="3")], NOW)
    assert (r.new, r.updated) == (0, 1)
    assert store.item_count() == 3
    got = store.get_item(post.id)
    assert got is not None and got.item.title == "Post (edited)"
    # another source linking the same post may not write it
    store.remember_sources([("My blog", *feed), ("Aggregator", "feed", "https://agg.example.org/")])
    r = store.upsert_items([Item("Post (aggregated)", "https://blog.example.org/p/1",
                                 "Aggregator")], NOW)
    assert (r.new, r.updated) == (0, 0)


def test_items_since_and_lookup_by_url(store: Store) -> None:
    old = Item("Old", "https://e.org/old", "s", published=NOW - timedelta(days=30))
    new = Item("New", "https://e.org/new", "s", published=NOW - timedelta(hours=1))
    undated = Item("Undated", "https://e.org/undated", "s")
    store.upsert_items([old, new, undated], NOW)
    recent = [s.item.title for s in store.items_since(NOW - timedelta(days=7))]
    assert recent == ["Undated", "New"]  # undated items count from when first seen
    hit = store.get_item("http://e.org/new/?utm_source=x")
    assert hit is not None and hit.item.title == "New"
    assert store.get_item("https://e.org/missing") is None


def test_source_state_success_failure_and_validators(store: Store) -> None:
    store.record_success("b", NOW, etag='"v1"', last_modified="Wed, 18 Nov 2026 10:00:00 GMT")
    store.record_failure("b", NOW + timedelta(hours=1), "HTTP 500")
    store.record_failure("b", NOW + timedelta(hours=2), "timed out",
                         retry_after=NOW + timedelta(hours=3))
    st = store.source_state("b")
    assert st.failures == 2
    assert st.last_error == "timed out"
    assert st.retry_after == NOW + timedelta(hours=3)
    assert st.etag == '"v1"'  # a failure keeps the validators
    assert st.last_success == NOW
    store.record_success("b", NOW + timedelta(hours=4))  # a 304 keeps them too
    st = store.source_state("b")
    assert (st.failures, st.retry_after, st.etag) == (0, None, '"v1"')


def test_a_sources_notice_lasts_until_a_fetch_says_otherwise(store: Store) -> None:
    """What a fetch said beside its items ("moved permanently …") is kept through failures,
    replaced by the next success's, and goes with the source's state to a new name."""
    store.record_success("b", NOW, notice="moved permanently to https://example.org/b")
    store.record_failure("b", NOW + timedelta(hours=1), "HTTP 500")
    assert store.source_state("b").notice == "moved permanently to https://example.org/b"
    store.record_success("b", NOW + timedelta(hours=2), notice="malformed feed, read anyway")
    assert store.source_state("b").notice == "malformed feed, read anyway"
    store.remember_sources([("b", "feed", "https://example.org/old")])
    store.remember_sources([("b2", "feed", "https://example.org/old")])  # renamed
    assert store.source_state("b2").notice == "malformed feed, read anyway"
    store.record_success("b2", NOW + timedelta(hours=3))
    assert store.source_state("b2").notice == ""
    store.record_success("b2", NOW + timedelta(hours=4), notice="moved")
    store.remember_sources([("b2", "feed", "https://example.org/new")])  # its URL updated
    assert store.source_state("b2").notice == ""


def test_vectors_roundtrip_by_model_and_hash(store: Store) -> None:
    v = np.arange(4, dtype=np.float32)
    store.put_vectors("m1", {"h1": v})
    assert np.array_equal(store.get_vectors("m1", ["h1", "h2"])["h1"], v)
    assert store.get_vectors("m2", ["h1"]) == {}
    store.upsert_items([paper()], NOW)
    missing = store.missing_vectors("m1")
    assert len(missing) == 1 and missing[0][1] == "Deep nets"


def test_voted_items_give_each_vote_its_items_content_hash_and_no_text(store: Store) -> None:
    """What the 👍/👎 model's key needs, read without building the items."""
    store.upsert_items([paper()], NOW)
    [stored] = store.items_since()
    store.set_feedback("c1", stored.id, "up", NOW, stage="cnn")
    store.set_feedback("c2", "not-stored", "down", NOW + timedelta(minutes=1))
    store.set_feedback("c2", stored.id, "down", NOW + timedelta(minutes=2), stage="nlp")
    store.set_feedback("c1", "saved", "later", NOW)
    assert store.voted_items() == [
        ("c1", stored.id, "up", NOW.timestamp(), "cnn", stored.content_hash),
        ("c2", "not-stored", "down", NOW.timestamp() + 60, "", ""),
        ("c2", stored.id, "down", NOW.timestamp() + 120, "nlp", stored.content_hash)]
    assert [v.item_id for v in store.voted_items("c2")] == ["not-stored", stored.id]
    assert store.item_titles([stored.id, "not-stored"]) == {stored.id: "Deep nets"}


def test_feedback_and_deliveries_are_per_chat(store: Store) -> None:
    store.set_feedback("c1", "x", "up", NOW)
    store.set_feedback("c1", "x", "down", NOW + timedelta(minutes=1))  # changing one's mind
    store.set_feedback("c2", "x", "later", NOW)
    assert [(v.chat, v.item_id, v.value, v.stage) for v in store.feedback("c1")] == \
        [("c1", "x", "down", "")]
    store.set_feedback("c1", "x", "up", NOW + timedelta(minutes=2), stage="nlp")
    [latest] = store.feedback("c1")
    assert (latest.value, latest.stage, latest.at) == ("up", "nlp", NOW + timedelta(minutes=2))
    assert len(store.feedback()) == 1 and store.bookmarks("c2") == ["x"]
    store.mark_delivered("c1", ["x", "y"], NOW)
    store.mark_delivered("c1", ["x"], NOW)
    assert store.delivered("c1") == {"x", "y"}
    assert store.delivered("c2") == set()


def test_shares_link_a_post_to_the_item(store: Store) -> None:
    store.upsert_items([paper()], NOW)
    post = Item("Look at this", "https://x.com/ada/status/1", "Ada/x", "social",
                links=("https://arxiv.org/abs/2401.00001",), person="Ada")
    store.upsert_items([post], NOW)
    found = store.find_by_urls(post.links)
    assert found == {"https://arxiv.org/abs/2401.00001": "arxiv:2401.00001"}
    store.add_share("arxiv:2401.00001", "Ada/x", "Ada", post.id, NOW)
    got = store.get_item("arxiv:2401.00001")
    assert got is not None
    assert got.shared_by == ("Ada",)
    assert got.sources == ("arXiv cs.LG",)
    assert store.shares([post.id]) == {post.id: "arxiv:2401.00001"}


def withdrawal(version: int = 2) -> Item:
    """The paper's version `version`, which withdraws it (arXiv's notice as its abstract)."""
    return replace(paper(version), summary="This paper has been withdrawn by the author(s).",
                   withdrawn=True)


def test_a_withdrawn_paper_kept_for_its_votes_is_offered_nowhere_but_the_saved_list(
        store: Store) -> None:
    """c1 voted on the paper and c2 saved it; then arXiv's v2 withdrew it. It stays, with its
    text, its vote and its place on c2's list, marked withdrawn; but it left every digest's
    and search's candidates (it stayed in other chats' digests as it was), their counts, and
    the shares of a post about it (which stands on its own, as it does for a paper removed)."""
    store.upsert_items([paper(), Item("Other", "https://e.org/other", "s1",
                                      published=NOW - timedelta(hours=1))], NOW)
    post = Item("Look at this", "https://social.example.org/ada/1", "Ada/x", "social",
                published=NOW, links=("https://arxiv.org/abs/2401.00001",), person="Ada")
    store.upsert_items([post], NOW)
    store.add_share("arxiv:2401.00001", "Ada/x", "Ada", post.id, NOW)
    store.set_feedback("c1", "arxiv:2401.00001", "up", NOW)
    store.set_feedback("c2", "arxiv:2401.00001", "later", NOW)
    week = NOW - timedelta(days=7)
    assert "arxiv:2401.00001" in store.candidates("m", week, dim=2).ids
    assert store.upsert_items([withdrawal()], NOW + timedelta(hours=1)).updated == 0
    assert store.candidates("m", week, dim=2).ids == [post.id, Item(
        "Other", "https://e.org/other", "s1").id]
    assert store.candidates("m", None, dim=2, hidden=["gone"]).ids == \
        store.candidates("m", None, dim=2).ids
    assert store.count_followed(week, ["gone"]) == 2
    assert list(store.author_matches(["deep"], None)) == []
    assert store.shares([post.id]) == {}
    kept = store.get_item("arxiv:2401.00001")
    assert kept is not None and kept.item.withdrawn
    assert (kept.item.summary, kept.item.arxiv_version) == ("abstract v1", 1)
    assert [s.item.withdrawn for s in store.bookmarked_items("c2")] == [True]
    assert [(v.item_id, v.content_hash) for v in store.voted_items("c1")] == \
        [("arxiv:2401.00001", kept.content_hash)]
    # listed again (another category's query): still withdrawn since the first time
    store.upsert_items([withdrawal()], NOW + timedelta(hours=7))
    assert store.db.execute("SELECT withdrawn FROM items WHERE id = 'arxiv:2401.00001'"
                            ).fetchone()[0] == (NOW + timedelta(hours=1)).timestamp()


def test_a_corrected_version_after_a_withdrawal_brings_a_kept_paper_back(store: Store) -> None:
    """v2 withdrew the paper a chat voted on; v3 is a paper again: it is offered again, as v3."""
    store.upsert_items([paper()], NOW)
    store.set_feedback("c1", "arxiv:2401.00001", "up", NOW)
    store.upsert_items([withdrawal()], NOW + timedelta(hours=1))
    assert store.upsert_items([paper(3)], NOW + timedelta(hours=2)).updated == 1
    back = store.get_item("arxiv:2401.00001")
    assert back is not None and not back.item.withdrawn and back.item.arxiv_version == 3
    assert store.candidates("m", None, dim=2).ids == ["arxiv:2401.00001"]


def test_a_paper_removed_for_its_withdrawal_is_told_from_one_pruned(store: Store) -> None:
    """Both leave a tombstone under the paper's key; only the withdrawal's says so."""
    store.upsert_items([paper()], NOW)
    store.upsert_items([withdrawal()], NOW + timedelta(hours=1))
    assert store.get_item("arxiv:2401.00001") is None
    for ref in ("arxiv:2401.00001", "2401.00001", "arXiv:2401.00001v2",
                "<https://arxiv.org/abs/2401.00001v1>"):
        assert store.was_withdrawn(ref), ref
    undated = Item("Old", "https://arxiv.org/abs/2401.00002", "arXiv cs.LG", "paper",
                   arxiv_id="2401.00002")
    store.upsert_items([undated], NOW)
    assert store.delete_items([undated.id], NOW + timedelta(days=1), NOW) == [undated.id]
    assert store.tombstone_count() == 2
    assert not store.was_withdrawn(undated.id) and not store.was_withdrawn("2401.99999")
    assert not store.was_withdrawn("https://e.org/a")


def test_a_withdrawal_tombstone_lasts_while_arxiv_lists_the_withdrawn_paper(
        store: Store) -> None:
    """A tombstone no feed lists for the retention period goes; a person's author query lists
    the withdrawn version at every collection, and its tombstone went all the same: a year
    later the paper read as never collected, and a blog linking to it brought it back."""
    store.upsert_items([paper()], NOW)
    store.upsert_items([withdrawal()], NOW + timedelta(hours=1))
    later = NOW + timedelta(days=400)
    store.upsert_items([withdrawal()], later - timedelta(days=1))
    assert store.delete_tombstones(later - timedelta(days=365)) == 0
    assert store.was_withdrawn("2401.00001")
    blog = Item("On deep nets", "https://arxiv.org/abs/2401.00001", "Blog", "post",
                published=later)
    assert store.upsert_items([blog], later) == UpsertResult(skipped=1)


def test_a_paper_withdrawn_in_the_call_that_brought_it_is_not_new(store: Store) -> None:
    """A blog post naming the paper, then its withdrawal, in one call: the item was taken in
    and removed, but its id stayed among the new ones and went into the word index, and the
    corrected version's insert later failed on that index's key."""
    blog = Item("On deep nets", "https://arxiv.org/abs/2401.00001", "Blog", "post",
                published=NOW, summary="A blog post about deep nets")
    assert store.upsert_items([blog, withdrawal()], NOW) == UpsertResult(withdrawn=1)
    assert store.get_item("arxiv:2401.00001") is None
    assert store.upsert_items([paper(3)], NOW + timedelta(hours=1)).new == 1
    assert store.summary_matches('"v3"') in ([("arxiv:2401.00001", "")], None)


def test_a_corrected_version_after_a_withdrawal_is_taken_in_again_as_new(store: Store
                                                                          ) -> None:
    """v2 withdrew the paper and it was removed; v3 is a paper again ("withdrawn due to an
    error", then corrected): it stayed tombstoned for good. Now it is news again; the
    withdrawn version listed again, or a blog linking to it, still bring nothing back."""
    store.upsert_items([paper()], NOW)
    store.upsert_items([withdrawal()], NOW + timedelta(hours=1))
    blog = Item("On deep nets", "https://arxiv.org/abs/2401.00001v3", "Blog", "post",
                published=NOW)
    assert store.upsert_items([withdrawal(), replace(paper(2), withdrawn=False), blog],
                              NOW + timedelta(hours=2)) == UpsertResult(skipped=2)
    back = store.upsert_items([paper(3)], NOW + timedelta(hours=3))
    assert back.new_ids == ("arxiv:2401.00001",) and store.tombstone_count() == 0
    stored = store.get_item("arxiv:2401.00001")
    assert stored is not None and stored.item.arxiv_version == 3 and not stored.item.withdrawn
    assert store.summary_matches('"v3"') in ([("arxiv:2401.00001", "")], None)


def test_a_prunes_tombstone_of_a_paper_keeps_every_version_out(store: Store) -> None:
    undated = Item("Old", "https://arxiv.org/abs/2401.00002", "arXiv cs.LG", "paper",
                   arxiv_id="2401.00002", arxiv_version=1)
    store.upsert_items([undated], NOW)
    store.delete_items([undated.id], NOW + timedelta(days=1), NOW)
    assert store.upsert_items([replace(undated, arxiv_version=5)], NOW).skipped == 1


def test_meta(store: Store) -> None:
    assert store.get_meta("k") is None
    store.set_meta("k", "1")
    store.set_meta("k", "2")
    assert store.get_meta("k") == "2"


def test_migration_2_keeps_vectors_written_under_schema_1(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    assert isinstance(MIGRATIONS[0], str)
    for statement in MIGRATIONS[0].split(";\n"):
        if statement.strip():
            db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    vec = np.ones(3, dtype=np.float32)
    db.execute("INSERT INTO vectors VALUES ('m', 'h', 3, ?)", (vec.tobytes(),))
    db.commit()
    db.close()
    s = Store(path)
    assert s.schema_version == len(MIGRATIONS) >= 2
    assert np.array_equal(s.get_vectors("m", ["h"])["h"], vec)
    s.put_vectors("m", {"h": vec * 2})  # the unique key still deduplicates
    assert s.vector_count("m") == 1


def test_read_later_is_a_bookmark_beside_the_vote(store: Store) -> None:
    """Saving a liked item for later keeps the 👍; voting on a saved item (it has been read)
    takes it off the list."""
    store.set_feedback("c1", "x", "up", NOW, stage="cnn")
    store.set_feedback("c1", "x", "later", NOW + timedelta(minutes=1))
    store.set_feedback("c1", "y", "later", NOW + timedelta(minutes=2))
    assert [(v.item_id, v.value, v.stage) for v in store.feedback("c1")] == [("x", "up", "cnn")]
    assert store.bookmarks("c1") == ["y", "x"]  # the latest saved first
    store.set_feedback("c1", "y", "down", NOW + timedelta(minutes=3))
    assert store.bookmarks("c1") == ["x"]
    assert [v.value for v in store.feedback("c1")] == ["up", "down"]


def database_at(path: Path, version: int, *rows: str) -> Path:
    """A database as feedbot left it at schema `version`, with these INSERT statements run."""
    db = sqlite3.connect(path)
    for script in MIGRATIONS[:version]:
        if callable(script):  # 9, the word index
            script(db)
            continue
        for statement in script.split(";\n"):
            if statement.strip():
                db.execute(statement)
    db.execute(f"PRAGMA user_version = {version}")
    for row in rows:
        db.execute(row)
    db.commit()
    db.close()
    return path


def test_migration_5_moves_read_later_rows_to_bookmarks(tmp_path: Path) -> None:
    s = Store(database_at(tmp_path / "old.db", 4,
                          "INSERT INTO feedback VALUES ('c1', 'x', 'later', 1.0, 'cnn')",
                          "INSERT INTO feedback VALUES ('c1', 'y', 'up', 2.0, 'cnn')"))
    assert s.schema_version == len(MIGRATIONS) >= 5
    assert s.bookmarks("c1") == ["x"]
    assert [(v.item_id, v.value) for v in s.feedback("c1")] == [("y", "up")]
    s.close()


def test_migration_4_keeps_feedback_given_before_stages_were_recorded(tmp_path: Path) -> None:
    s = Store(database_at(tmp_path / "old.db", 3,
                          "INSERT INTO feedback VALUES ('c1', 'x', 'up', 1.0)"))
    assert s.schema_version == len(MIGRATIONS) >= 4
    assert [(v.item_id, v.value, v.stage) for v in s.feedback("c1")] == [("x", "up", "")]
    s.close()


def test_candidates_columns_and_matrix(store: Store) -> None:
    a = Item("A", "https://e.org/a", "s1", published=NOW - timedelta(hours=1))
    b = Item("B", "https://e.org/b", "s2", published=NOW - timedelta(hours=2))
    old = Item("Old", "https://e.org/old", "s1", published=NOW - timedelta(days=40))
    store.upsert_items([a, b, old], NOW)
    from feedbot.items import content_hash

    store.put_vectors("m", {content_hash(a.embed_text): np.array([1, 0], dtype=np.float32)})
    c = store.candidates("m", NOW - timedelta(days=7), dim=2)
    assert c.ids == [a.id, b.id]
    assert c.sources == ["s1", "s2"] and c.titles == ["A", "B"]
    assert c.missing == [1]
    assert np.array_equal(c.X, np.array([[1, 0], [0, 0]], dtype=np.float32))
    assert c.when[0] == (NOW - timedelta(hours=1)).timestamp()


def test_candidates_scan_and_lookup_paths_agree(store: Store) -> None:
    from feedbot.items import content_hash

    items = [Item(f"T{i}", f"https://e.org/{i}", "s", published=NOW - timedelta(hours=i))
             for i in range(6)]
    twin = Item("T0", "https://e.org/twin", "s", published=NOW - timedelta(minutes=30))
    store.upsert_items([*items, twin], NOW)  # `twin` has the same text as items[0]
    vecs = {content_hash(it.embed_text): np.full(3, i, dtype=np.float32)
            for i, it in enumerate(items[:5])}
    store.put_vectors("m", vecs)
    wide = store.candidates("m", NOW - timedelta(days=1))  # most vectors: the scan path
    narrow = store.candidates("m", NOW - timedelta(hours=1, minutes=1))  # the lookup path
    assert wide.ids[0] == items[0].id and wide.ids[1] == twin.id
    assert np.array_equal(wide.X[0], wide.X[1])  # twins share the vector
    assert wide.missing == [6]  # items[5] has no vector
    assert narrow.ids == wide.ids[:3]
    assert np.array_equal(narrow.X, wide.X[:3]) and narrow.missing == []


@pytest.mark.parametrize("since", [timedelta(days=1), timedelta(hours=3, minutes=1)])
def test_candidates_read_vectors_in_chunks_of_every_kind(store: Store, since: timedelta,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """float16 vectors are converted a chunk at a time; an old float32 blob and a damaged one
    (wrong length: NaN, embedded again) between them land in their own rows, in both the scan
    path (most vectors in the window) and the lookup path."""
    import feedbot.store as store_module
    from feedbot.items import content_hash

    monkeypatch.setattr(store_module, "DECODE_CHUNK", 2)
    items = [Item(f"T{i}", f"https://e.org/{i}", "s", published=NOW - timedelta(hours=i))
             for i in range(10)]
    store.upsert_items(items, NOW)
    hashes = [content_hash(it.embed_text) for it in items]
    store.put_vectors("m", {h: np.array([i, -i, 0.5], np.float32)
                            for i, h in enumerate(hashes) if i not in (1, 2)})
    store.db.execute("INSERT INTO vectors(model, content_hash, dim, vec) VALUES (?,?,?,?)",
                     ("m", hashes[2], 3, np.array([7, 8, 9], np.float32).tobytes()))
    store.db.execute("INSERT INTO vectors(model, content_hash, dim, vec) VALUES (?,?,?,?)",
                     ("m", hashes[1], 3, b"\x00" * 5))
    c = store.candidates("m", NOW - since)
    n = len(c.ids)
    assert n == (10 if since.days else 4)
    want = np.array([[i, -i, 0.5] for i in range(10)], np.float32)
    want[2] = [7, 8, 9]
    for i in range(n):
        if i == 1:
            assert np.isnan(c.X[i]).all()
        else:
            assert np.array_equal(c.X[i], want[i]), i
    assert c.missing == []


@pytest.mark.parametrize("ref", ["{id}", "{ID}", "  {id}\n", "[{id}]", "`{id}`", "'{id}'",
                                 "<https://blog.example.org/post-1>", "blog.example.org/post-1",
                                 "BLOG.example.org/post-1/", "“arxiv:2401.00001v2”",
                                 "[2401.00001]"])
def test_an_item_is_found_by_its_id_or_url_as_copied(store: Store, ref: str) -> None:
    """Ids are copied from `[id]` in the terminal digest, `` `id` `` in Markdown, with quotes,
    in upper case, or as a URL without its scheme; each used to be 'no stored item'."""
    post = Item("A post", "https://blog.example.org/post-1", "blog", "post")
    store.upsert_items([post, paper()], NOW)
    want = "arxiv:2401.00001" if "2401" in ref else post.id
    found = store.get_item(ref.format(id=post.id, ID=post.id.upper()))
    assert found is not None and found.id == want
    assert store.get_item("[nothing-like-this]") is None and store.get_item("[]") is None


def test_candidates_leave_out_items_only_hidden_sources_brought(store: Store) -> None:
    """An item stays while any source that brought it (a share included) is not hidden, and
    then names that source; nothing is deleted."""
    a = Item("A", "https://e.org/a", "old blog", published=NOW - timedelta(hours=1))
    b = Item("B", "https://e.org/b", "kept blog", published=NOW - timedelta(hours=2))
    c = Item("C", "https://e.org/c", "old blog", published=NOW - timedelta(hours=3))
    c_too = Item("C", "https://e.org/c", "kept blog", published=c.published)
    d = Item("D", "https://e.org/d", "old blog", published=NOW - timedelta(hours=4))
    store.upsert_items([a, b, c, d], NOW)
    store.upsert_items([c_too], NOW)
    store.add_share(d.id, "Ada/x", "Ada", "post-1", NOW)
    since = NOW - timedelta(days=7)
    assert store.candidates("m", since).sources == ["old blog", "kept blog", "old blog",
                                                    "old blog"]
    kept = store.candidates("m", since, hidden={"old blog"})
    assert kept.ids == [b.id, c.id, d.id] and kept.sources == ["kept blog", "kept blog", "Ada/x"]
    assert store.count_hidden(since, {"old blog"}) == 1
    assert store.candidates("m", since, hidden={"old blog", "Ada/x"}).ids == [b.id, c.id]
    assert store.item_count() == 4
    renamed = store.candidates("m", since, hidden={"old blog"}, rename={"kept blog": "Kept"})
    assert renamed.sources == ["Kept", "Kept", "Ada/x"]
    assert store.candidates("m", since, rename={"old blog": "Old"}).sources == [
        "Old", "kept blog", "Old", "Old"]
    # the vector lookup path (a small window of a big store) sees the same rows
    store.put_vectors("m", {it.content_hash: np.ones(2, np.float32) for it in
                            store.get_items([a.id, b.id, c.id, d.id])})
    for n in range(10):
        store.put_vectors("m", {f"other{n}": np.zeros(2, np.float32)})
    narrow = store.candidates("m", since, hidden={"old blog"})
    assert narrow.ids == kept.ids and narrow.missing == [] and narrow.X.shape == (3, 2)


def test_sharers_leave_out_hidden_sources(store: Store) -> None:
    store.upsert_items([paper()], NOW)
    store.add_share("arxiv:2401.00001", "Ada/x", "Ada", "p1", NOW)
    store.add_share("arxiv:2401.00001", "Bob/x", "Bob", "p2", NOW + timedelta(seconds=1))
    assert store.sharers() == {"arxiv:2401.00001": ("Ada", "Bob")}
    assert store.sharers(hidden={"Ada/x"}) == {"arxiv:2401.00001": ("Bob",)}


def test_remember_sources_records_targets_and_writes_only_changes(store: Store) -> None:
    store.record_failure("Blog", NOW, "boom")
    assert store.known_sources() == {"Blog": ("", "")}
    assert store.remember_sources([("Blog", "feed", "https://b.org/feed"),
                                   ("Q", "arxiv", "cat:cs.CV")]) is True
    assert store.remember_sources([("Blog", "feed", "https://b.org/feed"),
                                   ("Q", "arxiv", "cat:cs.CV")]) is False
    assert store.known_sources() == {"Blog": ("feed", "https://b.org/feed"),
                                     "Q": ("arxiv", "cat:cs.CV")}
    assert store.source_state("Blog").failures == 1  # the state is kept
    assert store.source_state("Q").last_attempt is None  # known, never collected
    # "Blog" renamed "New": its old name still stands for the feed, and follows it when the
    # feed URL changes next
    store.remember_sources([("New", "feed", "https://b.org/feed")])
    store.remember_sources([("New", "feed", "https://b.org/atom")])
    assert store.known_sources()["Blog"] == ("feed", "https://b.org/atom")


def test_an_x_handle_retyped_in_another_case_keeps_its_cursor(store: Store) -> None:
    """`x: grace_t` changed to `x: Grace_T` dropped the since_id: the next run read up to
    max_items posts again (X bills each), though the account is the same. A feed URL in
    another case is another URL: its validators still go."""
    store.record_success("Grace/x", NOW, cursor="1860000000000000005")
    store.note_target("Grace/x", "x", "grace_t")
    store.remember_sources([("Grace/x", "x", "Grace_T")])
    assert store.source_state("Grace/x").cursor == "1860000000000000005"
    store.remember_sources([("Grace/x", "x", "grace_h")])  # another account
    assert store.source_state("Grace/x").cursor == ""
    store.record_success("Blog", NOW, etag='"e1"')
    store.note_target("Blog", "feed", "https://b.example.org/Feed")
    store.remember_sources([("Blog", "feed", "https://b.example.org/feed")])
    assert store.source_state("Blog").etag == ""


def test_a_renamed_source_takes_the_state_of_its_last_collected_old_name(store: Store) -> None:
    feed = ("feed", "https://b.example.org/feed")
    store.record_success("Blog", NOW, etag='"e1"')
    store.note_target("Blog", *feed)
    store.record_failure("Blog v2", NOW + timedelta(hours=1), "HTTP 500")  # renamed once
    store.note_target("Blog v2", *feed)
    store.note_target("Blog v2", "feed", "https://elsewhere.example.org/feed")  # recorded: kept
    assert store.known_sources()["Blog v2"] == feed
    store.record_success("Other", NOW)
    store.note_target("Other", "feed", "https://o.example.org/feed")
    # renamed again: the latest old name's state comes along, not the older one's
    store.remember_sources([("Blog v3", *feed), ("Other", "feed", "https://o.example.org/feed")])
    st = store.source_state("Blog v3")
    assert (st.failures, st.last_error, st.last_attempt) == (1, "HTTP 500",
                                                             NOW + timedelta(hours=1))
    assert store.source_state("Other").etag == ""  # only the same feed's state moves
    # a new name that was collected already keeps its own state
    store.record_success("Fresh", NOW + timedelta(hours=2), etag='"f"')
    store.remember_sources([("Fresh", *feed), ("Other", "feed", "https://o.example.org/feed")])
    assert store.source_state("Fresh").etag == '"f"'
    # nor does a name still configured beside a new one that fetches the same
    solo = ("feed", "https://s.example.org/feed")
    store.record_success("Solo", NOW, etag='"s"')
    store.note_target("Solo", *solo)
    store.remember_sources([("Solo", *solo), ("Solo twin", *solo)])
    assert store.source_state("Solo twin").last_attempt is None


def test_migration_6_keeps_source_state_written_under_schema_5(tmp_path: Path) -> None:
    s = Store(database_at(tmp_path / "old.db", 5,
                          "INSERT INTO source_state(name, etag, failures) "
                          "VALUES ('Blog', 'e1', 2)"))
    assert s.schema_version == len(MIGRATIONS) >= 6
    st = s.source_state("Blog")
    assert (st.etag, st.failures) == ("e1", 2)
    assert s.known_sources() == {"Blog": ("", "")}
    s.close()


def test_migration_7_adds_tombstones_and_keeps_items(tmp_path: Path) -> None:
    s = Store(database_at(
        tmp_path / "old.db", 6,
        "INSERT INTO items(id, key, source, kind, title, url, content_hash, first_seen, updated) "
        "VALUES ('abc', 'guid:Blog:1', 'Blog', 'post', 'Undated', '', 'h', 1.0, 1.0)"))
    assert s.schema_version == len(MIGRATIONS) >= 7
    assert s.item_count() == 1 and s.tombstone_count() == 0
    gone = s.delete_items(["abc"], NOW, NOW)
    assert gone == ["abc"] and s.tombstone_count() == 1
    again = s.upsert_items([Item("Undated", "", "Blog", guid="1")], NOW)
    assert (again.new, again.skipped) == (0, 1)
    s.close()


def test_migration_8_adds_digest_topics_and_keeps_everything(tmp_path: Path) -> None:
    """A database of the last release upgrades in place: its votes, read-later list,
    deliveries and digest days stay; chats have no topic (their digest stays where it went)."""
    s = Store(database_at(
        tmp_path / "old.db", 7,
        "INSERT INTO feedback VALUES ('-100', 'x', 'up', 1.0, 'cnn')",
        "INSERT INTO bookmarks VALUES ('-100', 'y', 2.0)",
        "INSERT INTO deliveries VALUES ('-100', 'x', 3.0)",
        "INSERT INTO meta VALUES ('telegram.digest_day.-100', '2026-11-20')"))
    assert s.schema_version == len(MIGRATIONS) >= 8
    assert [(v.item_id, v.value, v.stage) for v in s.feedback("-100")] == [("x", "up", "cnn")]
    assert s.bookmarks("-100") == ["y"] and s.delivered("-100") == {"x"}
    assert s.get_meta("telegram.digest_day.-100") == "2026-11-20"
    assert s.digest_topic("-100") is None
    assert s.set_digest_topic("-100", 33, NOW) and not s.set_digest_topic("-100", 33, NOW)
    assert s.digest_topic("-100") == 33 and s.digest_topic("4242") is None
    assert not s.forget_digest_topic("-100", 34)  # another topic chosen since: kept
    assert s.forget_digest_topic("-100", 33) and s.digest_topic("-100") is None
    s.set_digest_topic("-100", 40, NOW)
    assert s.set_digest_topic("-100", None, NOW) and s.digest_topic("-100") is None
    s.close()


def test_migration_11_keeps_the_items_of_schema_10_offered(tmp_path: Path) -> None:
    """A database of the last release upgrades in place: its items are no withdrawn papers,
    and a withdrawal collected now marks a voted one."""
    s = Store(database_at(
        tmp_path / "old.db", 10,
        "INSERT INTO items(id, key, source, kind, title, url, summary, arxiv_version, "
        "content_hash, first_seen, updated) VALUES ('arxiv:2401.00001', 'arxiv:2401.00001', "
        "'arXiv cs.LG', 'paper', 'Deep nets', 'https://arxiv.org/abs/2401.00001v1', "
        "'abstract v1', 1, 'h', 1.0, 1.0)",
        "INSERT INTO feedback VALUES ('c1', 'arxiv:2401.00001', 'up', 2.0, 'cnn')"))
    assert s.schema_version == len(MIGRATIONS) >= 11
    [old] = s.items_since()
    assert not old.item.withdrawn and s.candidates("m", None, dim=2).ids == [old.id]
    s.upsert_items([withdrawal()], NOW)
    assert s.candidates("m", None, dim=2).ids == [] and s.feedback("c1")
    s.close()


def test_migration_12_keeps_the_tombstones_of_schema_11_those_of_a_prune(tmp_path: Path
                                                                          ) -> None:
    s = Store(database_at(tmp_path / "old.db", 11,
                          "INSERT INTO tombstones VALUES ('arxiv:2401.00001', 1.0, 1.0)"))
    assert s.schema_version == len(MIGRATIONS) >= 12
    assert not s.was_withdrawn("2401.00001")
    assert s.upsert_items([paper()], NOW).skipped == 1  # still a prune's tombstone
    s.close()


def words(s: Store, word: str) -> list[str]:
    """Ids of the items whose summary holds `word` (the word index)."""
    found = s.summary_matches(f'"{word}"')
    assert found is not None
    return sorted(i for i, _ in found)


def indexed(s: Store) -> int:
    """Summaries in the word index (one size record each), checked against its keys."""
    s.db.execute("INSERT INTO summary_words(summary_words, rank) VALUES ('integrity-check', 0)")
    n = s.db.execute("SELECT count(*) FROM summary_words_docsize").fetchone()[0]
    assert n == s.db.execute("SELECT count(*) FROM item_keys").fetchone()[0]
    return int(n)


OLD_ITEM = ("INSERT INTO items(id, key, source, kind, title, url, summary, content_hash, "
            "first_seen, updated) VALUES ('{n:012x}', 'k{n}', 'Blog', 'post', 'Post {n}', '', "
            "'{pad} the wombat of item {n}', 'h{n}', 1.0, 1.0)")


def test_migration_9_indexes_the_words_of_the_summaries_already_stored(tmp_path: Path) -> None:
    """A database of the last release upgrades in place: every stored summary is in the word
    index, its late words included, and the index keeps up from then on."""
    pad = "x " * 400
    s = Store(database_at(tmp_path / "old.db", 8,
                          *(OLD_ITEM.format(n=n, pad=pad) for n in range(3))))
    assert s.schema_version == len(MIGRATIONS) >= 9 and s.has_word_index()
    assert words(s, "wombat") == [f"{n:012x}" for n in range(3)] and indexed(s) == 3
    assert words(s, "2") == ["000000000002"]
    s.upsert_items([Item("New", "https://e.org/n", "Blog", summary="A wombat too.")], NOW)
    assert len(words(s, "wombat")) == 4 and indexed(s) == 4
    s.close()


def test_the_word_index_cuts_words_at_emoji_as_search_does(tmp_path: Path) -> None:
    """SQLite's tokenizer knows Unicode 6.1: emoji added since (🤗, 🤖, 🧠) were kept inside
    words, so "LoRA🤗" was the word "lora🤗" and "lora" found nothing. A database upgraded from
    schema 8 is indexed with the emoji cut out, and so is every new item."""
    glued = ("INSERT INTO items(id, key, source, kind, title, url, summary, content_hash, "
             "first_seen, updated) VALUES ('00000000000a', 'ka', 'Blog', 'post', 'A', '', "
             "'Trying LoRA🤗 on 🤖agents', 'ha', 1.0, 1.0)")
    s = Store(database_at(tmp_path / "old.db", 8, glued))
    assert words(s, "lora") == words(s, "agents") == ["00000000000a"]
    s.upsert_items([Item("New", "https://e.org/n", "Blog", summary="More LoRA🧠.")], NOW)
    assert len(words(s, "lora")) == 2 and indexed(s) == 2
    s.close()


def test_a_word_index_that_kept_emoji_in_words_is_made_again_on_open(tmp_path: Path) -> None:
    """A database indexed by the feedbot before (its tokenizer without separators) gets an
    index that cuts words at emoji on its next open; the triggers keep the new one."""
    path = tmp_path / "f.db"
    s = Store(path)
    blog = Item("Post", "https://e.org/p", "Blog", summary="Trying LoRA🤗 today.")
    s.upsert_items([blog], NOW)
    with s.transaction() as db:  # the index as the feedbot before this one made it
        db.execute("DROP TABLE summary_words")
        db.execute("CREATE VIRTUAL TABLE summary_words USING fts5(summary, content='', "
                   "tokenize=\"unicode61 remove_diacritics 0 tokenchars '_'\")")
        db.execute("INSERT INTO summary_words(rowid, summary) SELECT k.n, i.summary FROM "
                   "item_keys k JOIN items i ON i.id = k.id")
    assert words(s, "lora") == [] and words(s, "lora🤗") == [blog.id]
    s.close()
    s = Store(path)
    assert words(s, "lora") == [blog.id] and indexed(s) == 1
    s.upsert_items([Item("Post", "https://e.org/p", "Blog", summary="Now QLoRA🤗.")], NOW)
    assert words(s, "lora") == [] and words(s, "qlora") == [blog.id] and indexed(s) == 1
    s.close()


def index_made_with(s: Store, tokenizer: str) -> None:
    """The word index as a feedbot before this one made it, with `tokenizer`."""
    with s.transaction() as db:
        db.execute("DROP TABLE summary_words")
        db.execute("CREATE VIRTUAL TABLE summary_words USING fts5(summary, content='', "
                   f"tokenize=\"{tokenizer}\")")
        db.execute("INSERT INTO summary_words(rowid, summary) SELECT k.n, i.summary FROM "
                   "item_keys k JOIN items i ON i.id = k.id")


def test_a_word_index_that_kept_accents_is_made_again_on_open(tmp_path: Path) -> None:
    """The index of the feedbot before kept accents (remove_diacritics 0): "muller" found no
    summary naming Müller, where search now folds the query to "muller". On the next open
    the index is made again with accents folded, once: a second open keeps it."""
    from feedbot.store import _words_tokenizer

    path = tmp_path / "f.db"
    s = Store(path)
    blog = Item("Post", "https://e.org/p", "Blog", summary="After Müller and Rényi (2019).")
    s.upsert_items([blog], NOW)
    old = _words_tokenizer().replace("remove_diacritics 2", "remove_diacritics 0")
    index_made_with(s, old)
    assert words(s, "muller") == [] and words(s, "müller") == [blog.id]
    s.close()
    s = Store(path)
    assert words(s, "muller") == words(s, "renyi") == [blog.id] and indexed(s) == 1
    assert not s._words_stale()  # not made again at every open
    s.close()
    s = Store(path)
    s.upsert_items([Item("Post", "https://e.org/p", "Blog", summary="Now Erdős.")], NOW)
    assert words(s, "muller") == [] and words(s, "erdos") == [blog.id] and indexed(s) == 1
    s.close()


def test_processes_opening_a_database_being_migrated_to_9_index_each_item_once(
        tmp_path: Path) -> None:
    """As with the other migrations, the write lock decides who migrates; the others wait
    and find it done (not a second index of every summary, nor 'table already exists')."""
    import subprocess
    import sys

    path = database_at(tmp_path / "old.db", 8,
                       *(OLD_ITEM.format(n=n, pad="") for n in range(3000)))
    code = ("import sys; from feedbot.store import Store; "
            "s = Store(sys.argv[1]); print(s.schema_version); s.close()")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 3, [err for _, err in outs]
    assert {out.strip() for out, _ in outs} == {str(len(MIGRATIONS))}
    s = Store(path)
    assert len(words(s, "wombat")) == 3000 and indexed(s) == 3000
    s.close()


def test_the_word_index_follows_inserts_new_versions_merges_edits_and_deletes(
        store: Store) -> None:
    first = paper(1)
    first = Item(first.title, first.url, first.source, "paper", published=first.published,
                 summary="On wombats.", arxiv_id=first.arxiv_id, arxiv_version=1)
    store.upsert_items([first], NOW)
    assert words(store, "wombats") == ["arxiv:2401.00001"]
    store.upsert_items([Item(first.title, first.url, "Other", "paper", published=first.published,
                             summary="Other words.", arxiv_id=first.arxiv_id,
                             arxiv_version=1)], NOW)  # merged: the first summary stays
    assert words(store, "wombats") == ["arxiv:2401.00001"] and words(store, "other") == []
    store.upsert_items([Item(first.title, first.url, "Other", "paper", published=first.published,
                             summary="On numbats.", arxiv_id=first.arxiv_id,
                             arxiv_version=2)], NOW)  # a new version replaces it
    assert words(store, "wombats") == [] and words(store, "numbats") == ["arxiv:2401.00001"]
    blog = Item("Post", "https://e.org/p", "Blog", summary="Draft about quokkas.")
    store.upsert_items([blog], NOW)
    edited = Item("Post", "https://e.org/p", "Blog", summary="Final about bilbies.")
    assert store.upsert_items([edited], NOW).updated == 1  # its own source corrected it
    assert words(store, "quokkas") == [] and words(store, "bilbies") == [blog.id]
    assert indexed(store) == 2
    v1, v2 = (Item("Two", "https://arxiv.org/abs/2401.00002", "cs.CL", "paper", summary=text,
                   published=NOW, arxiv_id="2401.00002", arxiv_version=n)
              for n, text in ((1, "First dingoes."), (2, "Then emus.")))
    store.upsert_items([v1, v2], NOW)  # new, then a new version, in one batch
    assert words(store, "dingoes") == [] and words(store, "emus") == ["arxiv:2401.00002"]
    store.delete_items(["arxiv:2401.00002"], NOW + timedelta(days=9), NOW + timedelta(days=9))
    assert words(store, "emus") == [] and indexed(store) == 2
    store.upsert_items([v1], NOW)
    store.db.execute("DELETE FROM items WHERE id = 'arxiv:2401.00002'")  # by other means
    assert words(store, "dingoes") == [] and indexed(store) == 2
    gone = store.delete_items([blog.id, "arxiv:2401.00001"], NOW + timedelta(days=9),
                              NOW + timedelta(days=9))
    assert len(gone) == 2 and words(store, "bilbies") == words(store, "numbats") == []
    assert indexed(store) == 0


@pytest.mark.parametrize("ago", [timedelta(0), timedelta(hours=1)])
def test_a_retry_after_already_past_leaves_the_usual_backoff(store: Store,
                                                             ago: timedelta) -> None:
    """`Retry-After: 0`, or a date already past (a cached 503 page, a server's clock behind),
    was kept and made the source due at once after every failure: a server down all day was
    asked every minute (the soak test's month) instead of after 5, 10, 20 … minutes."""
    from feedbot.collect import BACKOFF_BASE, next_due

    store.record_failure("b", NOW, "HTTP 503 Service Unavailable", retry_after=NOW - ago)
    st = store.source_state("b")
    assert st.retry_after is None
    assert next_due(st, 6 * 3600.0) == NOW + timedelta(seconds=BACKOFF_BASE)
    store.record_failure("b", NOW, "HTTP 503", retry_after=NOW + timedelta(minutes=1))
    assert store.source_state("b").retry_after == NOW + timedelta(minutes=1)  # still honoured


def test_a_full_disk_is_not_called_a_damaged_database(tmp_path: Path) -> None:
    """Opening a new database on a full disk (here: a file size limit of 4 kB) said "damaged or
    not a feedbot database … Move it aside", sending the bot's user to move a good file away."""
    import subprocess
    import sys

    code = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "from feedbot.store import Store, StoreError\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "try:\n"
        "    Store.open(Path(sys.argv[1]))\n"
        "except StoreError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, timeout=120, check=True).stdout.strip()
    assert out.startswith(f"cannot write {tmp_path / 'feedbot.db'}: ")
    assert "free some space" in out and "damaged" not in out.replace("not damaged", "")


def test_an_error_after_sqlite_rolled_back_by_itself_is_the_error_raised(store: Store) -> None:
    """On some errors (a full disk part-way through a large write) SQLite ends the transaction
    itself: the ROLLBACK then raised "cannot rollback - no transaction is active" in place of
    the error, and an upgrade on a full disk was reported as a damaged database."""
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"), \
            store.transaction() as db:
        db.execute("ROLLBACK")  # as SQLite does by itself
        raise sqlite3.OperationalError("disk I/O error")
    assert not store.db.in_transaction
    with store.snapshot():
        store.db.execute("ROLLBACK")
    assert not store.db.in_transaction


def test_a_link_with_a_fragment_finds_the_entry_it_names(store: Store) -> None:
    """A day's posts on one page, told apart by their fragment: a URL reference (a vote by
    link, a post sharing it) found the first entry of the page, whatever the fragment."""
    page = "https://blog.example.org/2017/06/26.html"
    morning = Item("Morning note", f"{page}#a1", "Blog", guid=f"{page}#a1", published=NOW)
    evening = Item("Evening note", f"{page}#a2", "Blog", guid=f"{page}#a2", published=NOW)
    store.upsert_items([morning, evening], NOW)
    assert morning.id != evening.id
    got = store.get_item(f"{page}#a2")
    assert got is not None and got.id == evening.id
    assert store.find_by_urls([f"{page}#a2", f"{page}#a1", page, f"{page}#nothing"]) == {
        f"{page}#a2": evening.id, f"{page}#a1": morning.id}  # the page names neither


def test_a_post_sharing_a_page_of_several_entries_shares_none_of_them(store: Store) -> None:
    """A post linking a day's page (or an anchor none of its entries has) was filed as sharing
    the page's first entry, which it may not mention: that entry showed "shared by" and the
    post was folded into it. It now stands on its own; a link to one entry still shares it."""
    from feedbot.collect import link_shares

    page = "https://blog.example.org/2017/06/26.html"
    notes = [Item(f"Note {n}", f"{page}#a{n}", "Blog", guid=f"{page}#a{n}", published=NOW)
             for n in range(3)]
    posts = [Item(f"Read this {n}", f"https://bsky.example.org/ada/{n}", "Ada/bluesky",
                  kind="social", person="Ada", published=NOW, links=(link,))
             for n, link in enumerate((page, f"{page}#nothing", f"{page}#a1"))]
    store.upsert_items(notes + posts, NOW)
    assert link_shares(store, NOW) == 1
    assert store.shares(p.id for p in posts) == {posts[2].id: notes[1].id}
    shared = {it.id: it.shared_by for it in store.get_items(n.id for n in notes)}
    assert [shared[n.id] for n in notes] == [(), ("Ada",), ()]


def test_a_pages_url_that_names_no_one_of_its_entries_is_ambiguous(store: Store) -> None:
    """By the page's URL (or an anchor none of them has) `get_item` took the first of the
    page's entries, and `feedbot feedback` saved a vote on it: now it says which there are."""
    from feedbot.store import AmbiguousRef

    page = "https://blog.example.org/2017/06/26.html"
    notes = [Item(f"Note {n}", f"{page}#a{n}", "Blog", guid=f"{page}#a{n}", published=NOW)
             for n in range(3)]
    store.upsert_items(notes, NOW)
    for ref in (page, f"{page}#nothing", "http://blog.example.org/2017/06/26.html",
                "blog.example.org/2017/06/26.html"):
        with pytest.raises(AmbiguousRef) as e:
            store.get_item(ref)
        assert [s.id for s in e.value.items] == [n.id for n in notes], ref
    for n in notes:  # by its exact URL or its id (as the bot's buttons name it): that one
        assert [store.get_item(r).id for r in (n.url, n.id)] == [n.id, n.id]  # type: ignore
    whole = Item("The whole day", page, "Blog", published=NOW)  # the page as an item itself
    store.upsert_items([whole], NOW)
    assert store.get_item(page).id == whole.id  # type: ignore[union-attr]
    lone = "https://blog.example.org/2017/06/27.html"
    one = Item("Only note", f"{lone}#a1", "Blog", guid=f"{lone}#a1", published=NOW)
    store.upsert_items([one], NOW)
    assert store.get_item(lone).id == one.id  # type: ignore[union-attr]


def test_a_sources_item_count_leaves_out_what_its_posts_shared(store: Store) -> None:
    from feedbot.collect import link_shares

    papers = [Item(f"Paper {i}", f"https://arxiv.org/abs/2611.0000{i}", "arXiv", kind="paper",
                   arxiv_id=f"2611.0000{i}", arxiv_version=1, published=NOW) for i in range(3)]
    posts = [Item(f"Read this {i}", f"https://x.com/ada/status/{i}", "Ada/x", kind="social",
                  person="Ada", published=NOW, links=(papers[i].url,)) for i in range(3)]
    store.upsert_items(papers + posts, NOW)
    link_shares(store, NOW)
    assert store.item_count("Ada/x") == 3 and store.items_of(["Ada/x"]) == 3
    assert store.source_state("Ada/x").items == 3


def test_a_word_index_that_cut_words_at_marks_is_made_again_on_open(tmp_path: Path) -> None:
    """The index before `categories 'L* N* Co M*'` cut "मशीन" at its vowel sign: made again
    on the next open, once."""
    from feedbot.store import _WORDS_BEFORE_MARKS, _separators

    path = tmp_path / "f.db"
    s = Store(path)
    blog = Item("Post", "https://e.org/p", "Blog", summary="यह मशीन लर्निंग है.")
    s.upsert_items([blog], NOW)
    old = f"{_WORDS_BEFORE_MARKS} separators '{_separators()}'"
    index_made_with(s, old)
    assert words(s, "मश") == [blog.id]  # a piece of "मशीन" was a word of its own
    s.close()
    s = Store(path)
    assert words(s, "मशीन") == words(s, "लर्निंग") == [blog.id] and words(s, "मश") == []
    assert not s._words_stale()
    s.close()
