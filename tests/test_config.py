from pathlib import Path

import pytest

from crowd.cli.settings import settings_table
from crowd.config import (
    PACKAGED_MODEL,
    ConfigError,
    TrainingSettings,
    check_data_dir,
    declared,
    load_settings,
)


def test_defaults_need_no_environment():
    settings = load_settings({})
    assert settings.data_dir == Path("data")
    assert settings.model.base_model == PACKAGED_MODEL
    assert settings.n_groups == 3
    assert settings.model.device == "auto"
    assert settings.db_path == Path("data/crowd.db")


def test_values_are_read_and_typed():
    env = {
        "CROWD_DATA_DIR": "/tmp/x",
        "CROWD_GROUPS": "5",
        "CROWD_DEVICE": "CPU",
        "CROWD_BASE_MODEL": "some/model",
        "CROWD_WORKER": "false",
    }
    settings = load_settings(env)
    assert (settings.data_dir, settings.n_groups, settings.model.device) == (
        Path("/tmp/x"),
        5,
        "cpu",
    )
    assert settings.model.base_model == "some/model" and settings.start_worker is False


@pytest.mark.parametrize(
    "name,value",
    [
        ("CROWD_GROUPS", "zero"),
        ("CROWD_GROUPS", "0"),
        ("CROWD_GROUPS", "27"),
        ("CROWD_DEVICE", "tpu"),
        ("CROWD_PORT", "70000"),
        ("CROWD_WORKER", "maybe"),
        ("CROWD_TEMPERATURE", "-1"),
        ("CROWD_MAX_NEW_TOKENS", "1e3"),
        ("CROWD_SCHEDULER", "dynamic"),
        ("CROWD_SERVING", "tgi"),
        ("CROWD_VLLM_URL", "localhost:8000"),
    ],
)
def test_a_bad_value_names_its_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})


def test_gradio_server_port_and_name_apply_when_crowd_ones_are_unset():
    gradio = {"GRADIO_SERVER_PORT": "7999", "GRADIO_SERVER_NAME": "0.0.0.0"}
    settings = load_settings(gradio)
    assert (settings.port, settings.host) == (7999, "0.0.0.0")
    both = load_settings({**gradio, "CROWD_PORT": "8001", "CROWD_HOST": "10.0.0.1"})
    assert (both.port, both.host) == (8001, "10.0.0.1")
    with pytest.raises(ConfigError, match="GRADIO_SERVER_PORT"):
        load_settings({"GRADIO_SERVER_PORT": "http"})


def test_unwritable_data_dir_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="CROWD_DATA_DIR"):
        check_data_dir(blocker / "data")
    check_data_dir(tmp_path / "ok")
    assert (tmp_path / "ok").is_dir()


def test_min_examples_sets_the_epochs_of_small_sets_as_openai_does():
    rule = TrainingSettings(epochs=3, min_examples=100)
    assert [rule.epochs_for(n) for n in (100, 34, 33, 22, 15, 1)] == [3, 3, 4, 5, 7, 25]
    assert TrainingSettings(epochs=3).epochs_for(15) == 3  # off by default
    assert load_settings({"CROWD_MIN_EXAMPLES": "100"}).training.min_examples == 100
    with pytest.raises(ConfigError, match="CROWD_MIN_EXAMPLES"):
        load_settings({"CROWD_MIN_EXAMPLES": "-1"})


def test_the_readme_table_is_the_declared_settings():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = readme.index("<!-- settings:")
    table = readme[readme.index("\n", start) + 1 : readme.index("<!-- /settings -->")]
    assert table == settings_table(), "regenerate it with `python -m crowd settings`"


def test_the_readmes_first_section_says_how_to_open_the_organizer_view():
    """Two outside testers had to guess the variable's name (issue 27)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    first = readme[: readme.index("\n## ")]
    example = "CROWD_ORGANIZER_SECRET='a-long-key-you-choose' make run"
    assert example in first and "/organizer" in first
    load_settings({"CROWD_ORGANIZER_SECRET": "a-long-key-you-choose"})  # the example is valid


@pytest.mark.parametrize(
    "name,meta", [(n, m) for n, _, m in declared()], ids=[n for n, _, _ in declared()]
)
def test_every_ranged_setting_refuses_a_value_out_of_range(name, meta):
    allowed = getattr(meta["parse"], "range", "")
    if not allowed or allowed == "OWNER/NAME":
        pytest.skip("free text")
    bad = "-99999999" if "-" in allowed and allowed[0].isdigit() else "not-an-option"
    with pytest.raises(ConfigError, match=meta["env"][0]):
        load_settings({meta["env"][0]: bad})


def test_secrets_are_long_enough_any_text_and_never_echoed():
    for name, short in (
        ("CROWD_ORGANIZER_SECRET", "hunter2-short"),
        ("CROWD_IDENTITY_SECRET", "qqqq-too-short"),
    ):
        with pytest.raises(ConfigError, match=f"{name}.*at least") as refused:
            load_settings({name: short})
        assert short not in str(refused.value) and "not shown" in str(refused.value)
    assert load_settings({"CROWD_ORGANIZER_SECRET": "clé-d'été-très-sûre"}).organizer_secret
    assert "secret" not in repr(load_settings({"CROWD_BACKUP_KEY": "secret" * 6}))


def test_a_replica_is_a_folder_or_an_s3_url_with_credentials():
    assert load_settings({"CROWD_REPLICA": "file:///mnt/b"}).replica == Path("/mnt/b")
    keys = {"AWS_ACCESS_KEY_ID": "HFAKEXAMPLE", "AWS_SECRET_ACCESS_KEY": "s3-secret-value"}
    s3 = load_settings({"CROWD_REPLICA": "s3://bucket/crowd/space/", **keys})
    assert (s3.replica.bucket, s3.replica.prefix, s3.aws_region) == (
        "bucket",
        "crowd/space",
        "us-east-1",
    )
    assert "s3-secret-value" not in repr(s3) and "HFAKEXAMPLE" not in repr(s3)
    for url, why in (
        ("s3://", "needs a bucket"),
        ("s3:///crowd", "needs a bucket"),
        ("s3://KEY:hunter2pass@bucket/x", "holds no credentials"),
        ("gs://bucket/x", "folder .* or s3://"),
    ):
        with pytest.raises(ConfigError, match=f"CROWD_REPLICA.*{why}") as refused:
            load_settings({"CROWD_REPLICA": url, **keys})
        assert "hunter2pass" not in str(refused.value)
    with pytest.raises(ConfigError, match="needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        load_settings({"CROWD_REPLICA": "s3://bucket/crowd"})
    with pytest.raises(ConfigError, match="CROWD_S3_ENDPOINT"):
        load_settings({"CROWD_REPLICA": "s3://b/c", "CROWD_S3_ENDPOINT": "s3.hf.co", **keys})


def test_vllm_serving_needs_the_server_address():
    with pytest.raises(ConfigError, match="CROWD_SERVING=vllm needs CROWD_VLLM_URL"):
        load_settings({"CROWD_SERVING": "vllm"})
    model = load_settings(
        {"CROWD_SERVING": "vllm", "CROWD_VLLM_URL": "http://127.0.0.1:8000/"}
    ).model
    assert (model.serving, model.vllm_url, model.scheduler) == (
        "vllm",
        "http://127.0.0.1:8000",
        "continuous",
    )
