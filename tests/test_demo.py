"""`make demo` must do what it narrates, in real processes; its exit status says so."""

from rsm import demo


def test_demo_succeeds(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert 0 == demo.main(str(tmp_path))


def test_demo_fails_loudly_when_a_step_is_false(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # If the restarted replica had not caught up, the demo must not report success.
    real_expect = demo.expect

    def expect(condition: bool, what: str) -> None:
        real_expect(condition and "caught up" not in what, what)

    monkeypatch.setattr(demo, "expect", expect)
    assert 1 == demo.main(str(tmp_path))
