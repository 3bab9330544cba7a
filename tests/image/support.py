"""The built image, and containers run from it the way infra/k8s/deployment.yaml runs them.

The image is built by infra/image/build.sh (buildah, daemonless) and inspected with
``buildah inspect``. A container is an OCI runtime bundle started with runc: its root filesystem
is the image's (mounted with ``buildah mount``), and its process, security settings, environment
and volumes are translated from the Deployment's worker container: runAsUser/runAsGroup/fsGroup,
readOnlyRootFilesystem, capabilities drop ALL, allowPrivilegeEscalation false, command/args over
the image's ENTRYPOINT/CMD, envFrom the ConfigMap then env, emptyDir volumes as tmpfs, ConfigMap
and Secret volumes as read-only binds of host paths the test provides.

One deliberate difference: no network namespace, so the container shares the host's network and
reaches the local stack on 127.0.0.1 (in a pod the worker reaches its services by name).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
#: buildah's environment for daemonless runs (as infra/image/env.sh sets it).
BUILDAH_ENV = {"BUILDAH_ISOLATION": "chroot"}
#: Figures for the session's summary (image size, build time, what the smoke test saw).
FIGURES: dict[str, str] = {}


def tool(name: str) -> str | None:
    """Where ``name`` is installed; Debian puts runc and debootstrap in sbin, which PATH may lack."""
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin")


def runc(*args: str) -> list[str]:
    return [tool("runc") or "runc", *args]


def buildah(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(
        ["buildah", *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **BUILDAH_ENV}
    )
    if result.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout.strip()


@dataclass(frozen=True)
class Image:
    """A built image: its tag, its Docker-format configuration and its layers' sizes."""

    tag: str
    config: dict[str, Any]
    layers: list[int]  # uncompressed size of each layer (tar bytes), base image first
    build_s: float

    @classmethod
    def inspect(cls, tag: str, build_s: float) -> Image:
        data = json.loads(buildah("inspect", "--type", "image", tag))
        layers = [int(layer["size"]) for layer in json.loads(data["Manifest"])["layers"]]
        return cls(tag, data["Docker"]["config"], layers, build_s)

    @property
    def size(self) -> int:
        """What `buildah images` shows: the uncompressed layers together."""
        return sum(self.layers)

    @property
    def env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.config.get("Env") or [])


@contextlib.contextmanager
def mounted(image: Image) -> Iterator[Path]:
    """The image's root filesystem, mounted on the host (a throw-away working container)."""
    name = f"icefeed-test-{uuid.uuid4().hex[:8]}"
    buildah("from", "--pull=never", "--name", name, image.tag)
    try:
        yield Path(buildah("mount", name))
    finally:
        with contextlib.suppress(RuntimeError):
            buildah("umount", name)
        buildah("rm", name)


# -- the Deployment --------------------------------------------------------------------------------


def manifests(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def deployment() -> dict[str, Any]:
    (dep,) = [d for d in manifests("deployment.yaml") if d["kind"] == "Deployment"]
    return dep


def worker_container(dep: Mapping[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "worker"]
    return container


def config_map(name: str) -> dict[str, str]:
    (cm,) = [d for d in manifests("configmap.yaml") if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name]
    return dict(cm["data"])


def security(dep: Mapping[str, Any]) -> dict[str, Any]:
    """The worker container's effective securityContext: the pod's, overridden by the container's."""
    pod = dep["spec"]["template"]["spec"].get("securityContext", {})
    return {**pod, **worker_container(dep).get("securityContext", {})}


def argv(image: Image, container: Mapping[str, Any]) -> list[str]:
    """What Kubernetes runs: command replaces ENTRYPOINT (and drops CMD), args replace CMD."""
    entrypoint = container.get("command", image.config.get("Entrypoint") or [])
    cmd = container.get("args", [] if "command" in container else image.config.get("Cmd") or [])
    return [*entrypoint, *cmd]


# -- containers --------------------------------------------------------------------------------


@dataclass
class Pod:
    """How to run the Deployment's worker container from ``image`` on this machine.

    ``secrets`` gives the values of env entries taken from a Secret (by variable name); ``files``
    gives host paths for ConfigMap/Secret volumes (by volume name; an optional one may be left out);
    ``env`` is applied last (the local stack's endpoints replace the ConfigMap's AWS values)."""

    image: Image
    rootfs: Path
    workdir: Path
    secrets: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    dep: dict[str, Any] = field(default_factory=deployment)

    def environment(self) -> dict[str, str]:
        container = worker_container(self.dep)
        env = dict(self.image.env)
        for source in container.get("envFrom", []):
            env |= config_map(source["configMapRef"]["name"])
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = item["value"]
            elif "secretKeyRef" in item.get("valueFrom", {}):
                env[item["name"]] = self.secrets[item["name"]]
            else:
                raise AssertionError(f"env {item['name']}: a source these tests do not translate")
        env.setdefault("HOME", self._home())
        return env | self.env

    def _home(self) -> str:
        """What the kubelet's runtime sets: the home directory of runAsUser in the image's /etc/passwd."""
        uid = str(security(self.dep)["runAsUser"])
        for line in (self.rootfs / "etc" / "passwd").read_text().splitlines():
            fields = line.split(":")
            if len(fields) > 5 and fields[2] == uid:
                return fields[5]
        return "/"

    def _mounts(self) -> list[dict[str, Any]]:
        spec = self.dep["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        mounts = []
        for vm in worker_container(self.dep).get("volumeMounts", []):
            volume = volumes[vm["name"]]
            if "emptyDir" in volume:
                limit = volume["emptyDir"].get("sizeLimit", "")
                size = [f"size={limit.removesuffix('i').lower()}"] if limit else []
                mounts.append(
                    {
                        "destination": vm["mountPath"],
                        "type": "tmpfs",
                        "source": "tmpfs",
                        "options": ["nosuid", "nodev", "mode=1777", *size],
                    }
                )
                continue
            kind = "configMap" if "configMap" in volume else "secret"
            if kind not in volume:
                raise AssertionError(f"volume {vm['name']}: a kind these tests do not translate")
            if vm["name"] not in self.files:
                assert volume[kind].get("optional"), f"volume {vm['name']} is required: give it in files"
                continue
            options = ["rbind", "ro" if vm.get("readOnly") else "rw"]
            mounts.append(
                {
                    "destination": vm["mountPath"],
                    "type": "bind",
                    "source": str(self.files[vm["name"]]),
                    "options": options,
                }
            )
        return mounts

    def spec(self, args: list[str] | None = None) -> dict[str, Any]:
        """The OCI runtime configuration: runc's defaults, then what the Deployment says."""
        bundle = self.workdir / f"spec-{uuid.uuid4().hex[:8]}"
        bundle.mkdir(parents=True)
        subprocess.run(runc("spec", "--bundle", str(bundle)), check=True, timeout=30)
        spec: dict[str, Any] = json.loads((bundle / "config.json").read_text())
        shutil.rmtree(bundle)
        sec = security(self.dep)
        container = worker_container(self.dep)
        assert sec.get("capabilities", {}).get("drop") == ["ALL"] and not sec["capabilities"].get("add")
        process = spec["process"]
        process["terminal"] = False
        process["args"] = args if args is not None else argv(self.image, container)
        process["env"] = [f"{k}={v}" for k, v in self.environment().items()]
        process["cwd"] = self.image.config.get("WorkingDir") or "/"
        process["user"] = {
            "uid": sec["runAsUser"],
            "gid": sec["runAsGroup"],
            "additionalGids": [sec["fsGroup"]] if "fsGroup" in sec else [],
        }
        process["noNewPrivileges"] = sec.get("allowPrivilegeEscalation") is False
        process["capabilities"] = {k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")}
        spec["root"] = {"path": str(self.rootfs), "readonly": bool(sec.get("readOnlyRootFilesystem"))}
        spec["hostname"] = "icefeed-test"
        spec["mounts"] = [*spec["mounts"], *self._mounts()]
        # The host's network: the local stack listens on 127.0.0.1.
        spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"]
        return spec

    @contextlib.contextmanager
    def start(self, args: list[str] | None = None, log_name: str = "container") -> Iterator[Container]:
        """Start a container (by default the Deployment's command); kill and delete it on exit."""
        ident = f"icefeed-{uuid.uuid4().hex[:10]}"
        bundle, state = self.workdir / ident, self.workdir / "runc-state"
        bundle.mkdir(parents=True)
        state.mkdir(exist_ok=True)
        (bundle / "config.json").write_text(json.dumps(self.spec(args), indent=1))
        log_path = self.workdir / f"{log_name}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                runc("--root", str(state), "run", "--bundle", str(bundle), ident),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        ctr = Container(ident, state, proc, log_path)
        try:
            yield ctr
        finally:
            if proc.poll() is None:
                ctr.signal(signal.SIGKILL)
                proc.wait(timeout=30)
            subprocess.run(runc("--root", str(state), "delete", "--force", ident), capture_output=True, timeout=30)

    def run(self, args: list[str], timeout: float = 60) -> tuple[int, str]:
        """Run ``args`` in a container configured like the worker's; return (exit status, output)."""
        with self.start(args, log_name=f"run-{uuid.uuid4().hex[:6]}") as ctr:
            code = ctr.wait(timeout)
            return code, ctr.output()


@dataclass
class Container:
    ident: str
    state: Path
    proc: subprocess.Popen[bytes]
    log_path: Path

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the container's first process (what the kubelet does to stop a pod)."""
        subprocess.run(
            runc("--root", str(self.state), "kill", self.ident, sig.name.removeprefix("SIG")),
            check=True,
            capture_output=True,
            timeout=30,
        )

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")
