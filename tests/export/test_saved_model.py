"""TF-Serving SavedModel: serving_default on raw DICOM values matches Keras within 1e-5."""

from __future__ import annotations

import numpy as np
import pytest

from medtf.preprocess import Preprocessing
from medtf.export import edge
from medtf.export.saved_model import export_saved_model, read_warmup_requests

from ._helpers import tiny_classifier, write_ct_dicom


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sm")
    spec = Preprocessing(intensity="window", windows=((1500, -600), (400, 40)), size=(32, 32))
    model = tiny_classifier(input_shape=(32, 32, 2), task="multiclass", num_classes=3)
    version = export_saved_model(model, tmp / "models", preprocessing=spec, name="ct", version=3)
    return model, spec, version, tmp


def test_layout(served):
    _, _, version, tmp = served
    assert version == tmp / "models" / "ct" / "3"
    assert (version / "saved_model.pb").is_file()
    assert (version / "assets.extra" / "tf_serving_warmup_requests").is_file()
    text = (tmp / "models" / "models.config").read_text()
    assert 'name: "ct"' in text and 'base_path: "/models/ct"' in text
    logs = read_warmup_requests(version)
    assert len(logs) == 1
    req = logs[0].predict_log.request
    assert req.model_spec.name == "ct" and req.model_spec.signature_name == "serving_default"
    assert "image" in req.inputs


def test_serving_default_on_raw_dicom_matches_keras(served, tmp_path):
    import tensorflow as tf

    model, spec, version, _ = served
    path = tmp_path / "ct.dcm"
    write_ct_dicom(path, rows=40, cols=48)
    raw = edge.read_image(path)  # modality values (HU), (40, 48, 1)
    loaded = tf.saved_model.load(str(version))
    assert set(loaded.signatures) == {"serving_default", "predict_preprocessed"}
    got = loaded.signatures["serving_default"](image=tf.constant(raw[None]))["predictions"].numpy()
    ref = model.predict(edge.preprocess(raw, spec)[None], verbose=0)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # any raw size works (resized in graph)
    raw2 = raw[:37, :29]
    got2 = loaded.signatures["serving_default"](image=tf.constant(raw2[None]))["predictions"].numpy()
    np.testing.assert_allclose(got2, model.predict(edge.preprocess(raw2, spec)[None], verbose=0), atol=1e-5)


def test_predict_preprocessed_signature(served):
    import tensorflow as tf

    model, _, version, _ = served
    x = np.random.default_rng(0).random((3, 32, 32, 2), dtype=np.float32)
    loaded = tf.saved_model.load(str(version))
    got = loaded.signatures["predict_preprocessed"](x=tf.constant(x))["predictions"].numpy()
    np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=1e-5)


def test_preprocessing_that_misses_the_model_input_is_refused(tmp_path):
    model = tiny_classifier(input_shape=(32, 32, 1))
    with pytest.raises(ValueError, match=r"model expects \(32, 32, 1\)"):
        export_saved_model(model, tmp_path, preprocessing=Preprocessing(size=(16, 16)), name="m")
