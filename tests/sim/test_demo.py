"""`make demo` must do what it narrates; its exit status says so."""

from rsm.sim import demo


def test_demo_succeeds() -> None:
    assert 0 == demo.main()


def test_demo_fails_loudly_when_a_step_is_false(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # If acknowledged writes were lost, the demo must not report success.
    monkeypatch.setattr(demo, "write", lambda sim, count, prefix: count - 1)
    assert 1 == demo.main()
