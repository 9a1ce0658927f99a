"""predict.py's file handling: unique mask names, its own outputs never read back as inputs (issue 32, D1, D2)."""

from pathlib import Path

from lib.deploy import predict_files


def test_inputs_that_differ_only_in_extension_get_their_own_masks(tmp_path: Path) -> None:
    names = {predict_files.mask_name(tmp_path / name, tmp_path) for name in ("a.jpg", "a.png", "a.dcm")}
    assert len(names) == 3 and all(n.endswith(".png") for n in names)
    slices = {predict_files.mask_name(tmp_path / "scan.nii.gz", tmp_path, k) for k in range(3)}
    assert len(slices) == 3  # each slice of a volume too


def test_a_runs_own_csv_and_masks_inside_the_input_folder_are_not_inputs(tmp_path: Path) -> None:
    (tmp_path / "slice.png").write_bytes(b"x")
    out_csv, masks = tmp_path / "predictions.csv", tmp_path / "masks"
    out_csv.write_text("file\n")
    masks.mkdir()
    (masks / "slice.png.png").write_bytes(b"x")
    assert predict_files.list_inputs(tmp_path, skip=[out_csv, masks]) == [tmp_path / "slice.png"]
    assert len(predict_files.list_inputs(tmp_path)) == 3  # without skip they would be read back
