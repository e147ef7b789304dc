"""bloodcls export: ONNX with preprocessing inside, ONNX Runtime parity on the run's test split, one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fit_tiny_run, run_cli

onnx = pytest.importorskip("onnx", reason="the export extra (onnx) is not installed")
ort = pytest.importorskip("onnxruntime", reason="the export extra (onnxruntime) is not installed")

from bloodcls.commands.export import load_classifier  # noqa: E402
from bloodcls.commands.export import main as export_main  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-epoch synthetic run: bloodcls_cnn_tiny, 32 px, 12 images per class; returns its best checkpoint."""
    return fit_tiny_run(tmp_path_factory.mktemp("export_run"))


@pytest.mark.slow  # fits a tiny run, exports it to ONNX
def test_export_writes_onnx_next_to_the_run_and_passes_parity(
    tiny_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export_main(["--ckpt_path", str(tiny_run), "--format", "onnx", "--check", "--batch_size", "7"])
    run_dir = tiny_run.parent.parent
    onnx_path = run_dir / "export" / "best.onnx"
    record = json.loads((run_dir / "export" / "best.onnx.json").read_text())
    parity = record["parity"]
    test_rows = [r for r in csv.DictReader((run_dir / "split.csv").open()) if r["subset"] == "test"]
    assert parity["n_images"] == len(test_rows) > 0  # the run's own test split, every image once
    assert parity["passed"] and parity["max_abs_diff"] <= 1e-4
    assert parity["ort_images_per_s"] > 0
    assert "parity on" in capsys.readouterr().out

    model = onnx.load(str(onnx_path))
    onnx.checker.check_model(model)
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["bloodcls.class_names"]) == record["class_names"]
    assert meta["bloodcls.image_size"] == "32"
    assert meta["bloodcls.center_crop"] == "1.0" and record["center_crop"] == 1.0
    assert "whole image" in meta["bloodcls.preprocess"] and "32 x 32" in record["preprocess"]
    (graph_input,) = model.graph.input
    assert graph_input.name == "images"
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 32, 32]  # dynamic batch, fixed image


@pytest.mark.slow
def test_onnx_runtime_equals_torch_on_a_batch(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    export_main(["--ckpt_path", str(tiny_run), "--output", str(out)])
    images = np.random.default_rng(0).integers(0, 256, size=(5, 3, 32, 32), dtype=np.uint8)  # not the traced batch
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (probs,) = session.run(["probabilities"], {"images": images})
    model = load_classifier(tiny_run)
    with torch.inference_mode():
        expected = model(torch.from_numpy(images)).softmax(dim=1).numpy()
    assert probs.shape == (5, 5) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, expected, atol=1e-5, rtol=0)
    with pytest.raises(Exception, match="(?i)type|uint8"):  # the contract is uint8 pixels, not floats
        session.run(["probabilities"], {"images": images.astype(np.float32)})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ckpt_path", "/does/not/exist.ckpt"], "--ckpt_path: checkpoint /does/not/exist.ckpt does not exist"),
        (["--ckpt_path", "any.ckpt", "--format", "tflite"], "--format tflite: unsupported (supported: onnx)"),
        (["--not_a_checkpoint"], "not a readable checkpoint"),
    ],
)
def test_bad_inputs_are_one_line_errors(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if args == ["--not_a_checkpoint"]:
        bogus = tmp_path / "notes.ckpt"
        bogus.write_text("not a checkpoint")
        args = ["--ckpt_path", str(bogus)]
    with pytest.raises(SystemExit) as exc:
        export_main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("bloodcls export: error:") and message in err


@pytest.mark.slow  # starts the console script
def test_console_script_routes_export(tmp_path: Path) -> None:
    result = run_cli("export", "--ckpt_path", str(tmp_path / "missing.ckpt"), cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_the_preprocess_text_names_the_crop() -> None:
    from bloodcls.commands.onnx_graph import preprocess_text

    assert "central 0.5 of each side" in preprocess_text(64, 0.5)
    assert "whole image" in preprocess_text(64, 1.0) and "64 x 64" in preprocess_text(64, 1.0)
