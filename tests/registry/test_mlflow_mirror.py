"""The MLflow registry mirror: same versions, same aliases, the snapshot digest as a tag."""

import pytest

from tunesmith.registry import ModelRegistry
from tunesmith.registry.mlflow_mirror import MODEL_ID_TAG, SNAPSHOT_TAG, MlflowMirror

from .conftest import FakeProject

mlflow = pytest.importorskip("mlflow")


@pytest.mark.slow  # MLflow creates its SQLite schema (~4 s)
def test_versions_and_aliases_are_mirrored_into_mlflow(tmp_path):
    project = FakeProject(tmp_path / "proj", mlflow=True)
    uri = f"sqlite:///{(project.ws.root / 'mlflow.db').resolve()}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("support-triage",
                                          artifact_location=(tmp_path / "mlflow-artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    a, pack = project.version(mlflow_run_id=run_id)
    b, _ = project.version(pack=pack)
    reg = ModelRegistry.from_config(project.cfg)
    assert reg.mirror is not None and reg.mirror.tracking_uri == uri
    reg.promote(a, by="ann")
    change = reg.promote(b, by="ann")
    reg.promote(a, "challenger", by="ann")
    assert change.mlflow.error is None and change.mlflow.aliases == {"champion": change.mlflow.versions[b]}
    assert client.get_registered_model("support-triage").aliases == {"champion": 2, "challenger": 1}
    reg.rollback(by="ann")
    champion = client.get_model_version_by_alias("support-triage", "champion")
    assert champion.tags[MODEL_ID_TAG] == a and champion.tags[SNAPSHOT_TAG] == reg.show(a).snapshot.id
    assert champion.run_id == run_id and champion.source.endswith(f"/artifacts/model/{a}")
    assert len(client.search_model_versions("name = 'support-triage'")) == 2  # registered once each


def test_a_failing_mirror_never_undoes_the_recorded_move(project, monkeypatch):
    good, _ = project.version()
    reg = ModelRegistry.from_config(project.cfg)
    assert reg.mirror is None  # the fixture's config turns MLflow tracking off
    reg.mirror = MlflowMirror("sqlite:///nowhere.db", "support-triage")

    def broken(self, versions, aliases):
        raise ConnectionError("tracking server unreachable")

    monkeypatch.setattr(MlflowMirror, "sync", broken)
    change = reg.promote(good, by="ann")
    assert change.changed and "tracking server unreachable" in change.mlflow.error
    assert reg.aliases() == {"champion": good}
