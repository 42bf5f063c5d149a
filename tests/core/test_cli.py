"""The CLI as a new user meets it: help with defaults, clear errors that name the flag or file, no tracebacks."""
import pytest

from curator.cli import main


def test_help_shows_every_default_and_the_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("curator ")
    with pytest.raises(SystemExit):
        main(["distill", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # help text is wrapped to the terminal
    assert "(default: 600)" in out and "--overwrite" in out and "(default: packaged:efficientnet-lite2)" in out
    with pytest.raises(SystemExit):
        main(["build-index", "--help"])
    assert "(default: 1000)" in " ".join(capsys.readouterr().out.split())


def test_bad_values_name_the_flag_and_never_print_a_traceback(tmp_path, capsys):
    assert main(["curate", "--index", str(tmp_path), "--queries", str(tmp_path), "--out", str(tmp_path),
                 "--strategy", "threshold"]) == 2
    err = capsys.readouterr().err
    assert "--threshold" in err and "Traceback" not in err and "Value error" not in err
    assert main(["search", "--index", str(tmp_path), "--image", "x.png", "-k", "0"]) == 2
    assert "-k must be between 1" in capsys.readouterr().err
    assert main(["curate", "--index", str(tmp_path), "--queries", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    # -v after the subcommand is accepted too
    assert main(["search", "-v", "--index", str(tmp_path), "--image", "x.png", "-k", "0"]) == 2



def test_a_port_in_use_is_refused_before_start_up(tmp_path, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["serve", "--index", str(tmp_path), "--data", str(tmp_path / "d"), "--no-auth",
                     "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}" in err and "--port" in err and not (tmp_path / "d").exists()


def test_samples_without_an_action_names_the_choices(capsys):
    with pytest.raises(SystemExit):
        main(["samples"])
    err = capsys.readouterr().err
    assert "ACTION" in err and "action" not in err.replace("ACTION", "")


def test_serve_names_a_bad_size_flag_before_touching_anything(tmp_path, capsys):
    assert main(["serve", "--index", str(tmp_path), "--data", str(tmp_path / "data"), "--no-auth",
                 "--port", "0", "--max-data-bytes", "lots"]) == 2
    assert "--max-data-bytes" in capsys.readouterr().err and not (tmp_path / "data").exists()


def test_serve_names_a_missing_index_in_one_line_and_writes_nothing(tmp_path, capsys):
    assert main(["serve", "--index", str(tmp_path / "nope"), "--data", str(tmp_path / "data"), "--no-auth",
                 "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--index" in err and "curator build-index" in err
    assert not (tmp_path / "data").exists()
