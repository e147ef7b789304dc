"""docker/bloodcls.def, the Apptainer twin of docker/Dockerfile: parsed and checked here (Apptainer itself is not
installable on the CI machines, so ``apptainer build`` is not run)."""

from __future__ import annotations

import re

from conftest import REPO

DEFINITION = REPO / "docker" / "bloodcls.def"
DOCKERFILE = REPO / "docker" / "Dockerfile"
SECTIONS = ("arguments", "labels", "help", "files", "environment", "post", "runscript", "test")


def _parse() -> tuple[dict[str, str], dict[str, str]]:
    """(header keywords, section name -> body); comment lines outside the shell sections are dropped."""
    header: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in DEFINITION.read_text().splitlines():
        if match := re.match(r"^%(\w+)\s*$", line):
            current = match.group(1)
            assert current not in sections, f"%{current} twice"
            sections[current] = []
        elif current is None:
            if line.strip() and not line.startswith("#"):
                key, sep, value = line.partition(":")
                assert sep, f"header line without 'Key: value': {line!r}"
                header[key.strip()] = value.strip()
        else:
            sections[current].append(line)
    return header, {name: "\n".join(body) for name, body in sections.items()}


def _shell_lines(body: str) -> list[str]:
    return [line.strip() for line in body.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_header_uses_the_dockerfiles_base_image() -> None:
    header, sections = _parse()
    assert header == {"Bootstrap": "docker", "From": header["From"]}
    docker_from = [line.split()[1] for line in DOCKERFILE.read_text().splitlines() if line.startswith("FROM ")]
    assert [header["From"]] == docker_from  # one base for both images: bump them together
    assert set(sections) == set(SECTIONS)


def test_post_installs_python_and_the_package_like_the_dockerfile() -> None:
    _, sections = _parse()
    post = _shell_lines(sections["post"])
    apt = next(line for line in post if line.startswith("apt-get install"))
    docker_apt = re.search(r"apt-get install [^&]*", DOCKERFILE.read_text())
    assert docker_apt and apt.split() == [w for w in docker_apt.group(0).split() if w != "\\"]  # same packages
    assert "python3.11 -m venv /opt/venv" in post
    assert "/opt/venv/bin/pip install --no-deps ." in post  # the package itself
    assert any(
        "tomllib" in line and "{{ EXTRAS }}" in line for line in sections["post"].replace("\\\n", " ").splitlines()
    )
    assert _shell_lines(sections["arguments"]) == ["EXTRAS=tune"]  # the Dockerfile's ARG default
    assert "ARG EXTRAS=tune" in DOCKERFILE.read_text()
    env = _shell_lines(sections["environment"])
    assert "export PATH=/opt/venv/bin:$PATH" in env


def test_files_come_from_the_repository() -> None:
    _, sections = _parse()
    for line in _shell_lines(sections["files"]):
        source, destination = line.split()
        assert (REPO / source).exists(), f"%files {source}: not in the repository"
        assert destination.startswith("/opt/bloodcls/")


def test_runscript_execs_bloodcls() -> None:
    _, sections = _parse()
    run = _shell_lines(sections["runscript"])
    assert run[-1] == 'exec bloodcls "$@"'  # arguments passed through, bloodcls replaces the shell (signals)
    assert "exec bloodcls --help" in run  # no arguments: the help, as the Docker image's CMD
    assert _shell_lines(sections["test"]) == ["bloodcls --help > /dev/null"]


def test_no_root_switch_and_no_secrets() -> None:
    text = DEFINITION.read_text()
    # Apptainer runs as the calling user; a definition must not try to change that or bake credentials in.
    assert not re.search(r"\b(sudo|fakeroot|chmod\s+[0-7]*777)\b", text)
    assert not re.search(r"(?i)(api[_-]?key|token|password|secret)\s*=", text)
    assert not re.search(r"(?i)wandb_api_key|hf_token|aws_", text)
