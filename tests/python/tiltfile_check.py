"""Evaluate a Tiltfile with a Starlark interpreter (starlark-pyo3, the Rust `starlark` crate
wrapped for Python) against recording stand-ins for Tilt's built-in functions, then check that
everything it names exists: files and directories, the images the manifests use, the objects
its resources group, the container ports it forwards, the resources it depends on.

    python3 tiltfile_check.py REPO [TILTFILE]

Prints a JSON summary of what the Tiltfile declared on success (exit 0); prints each problem
and exits 1 otherwise. `kustomize()` renders with the real `kubectl kustomize`; `local()` runs
nothing and returns a placeholder.
"""

import json
import os
import shlex
import subprocess
import sys

import starlark
import yaml


class Recorder:
    """Tilt's functions, recording their calls relative to the repository root."""

    def __init__(self, repo):
        self.repo = repo
        self.problems = []
        self.images = []
        self.objects = []
        self.resources = []
        self.local_resources = []
        self.local_commands = []

    def problem(self, text):
        self.problems.append(text)

    def path(self, what, path, kind="any"):
        full = os.path.join(self.repo, path)
        ok = {
            "any": os.path.exists,
            "file": os.path.isfile,
            "dir": os.path.isdir,
        }[kind](full)
        if not ok:
            self.problem("%s: %s does not exist" % (what, path))
        return full

    # --- images and manifests ---

    def docker_build(self, ref, context, dockerfile="Dockerfile", **kwargs):
        self.path("docker_build(%r) context" % ref, context, "dir")
        self.path("docker_build(%r) dockerfile" % ref, os.path.join(context, dockerfile), "file")
        self.images.append(ref)

    def kustomize(self, path, **kwargs):
        self.path("kustomize", os.path.join(path, "kustomization.yaml"), "file")
        rendered = subprocess.run(
            ["kubectl", "kustomize", path], cwd=self.repo, capture_output=True, text=True
        )
        if rendered.returncode != 0:
            self.problem("kustomize(%r) fails: %s" % (path, rendered.stderr.strip()))
            return ""
        return rendered.stdout

    def k8s_yaml(self, yaml_or_paths, **kwargs):
        items = yaml_or_paths if isinstance(yaml_or_paths, list) else [yaml_or_paths]
        for item in items:
            if "\n" in item:
                text = item
            else:
                full = self.path("k8s_yaml", item, "file")
                text = open(full).read() if os.path.isfile(full) else ""
            for obj in yaml.safe_load_all(text):
                if obj:
                    self.objects.append(obj)

    def read_file(self, path, default=None):
        full = self.path("read_file", path, "file")
        return open(full).read() if os.path.isfile(full) else ""

    def listdir(self, directory, recursive=False):
        full = self.path("listdir", directory, "dir")
        if not os.path.isdir(full):
            return []
        names = sorted(os.listdir(full))
        # Tilt returns paths; relative to the Tiltfile's directory here, which it resolves
        # against.
        return [
            os.path.join(directory, n) for n in names if os.path.isfile(os.path.join(full, n))
        ]

    def decode_yaml_stream(self, text):
        return [o for o in yaml.safe_load_all(text) if o is not None]

    def encode_yaml_stream(self, objects):
        return yaml.safe_dump_all(objects, sort_keys=False)

    def local(self, command, quiet=False, **kwargs):
        argv = command if isinstance(command, list) else shlex.split(command)
        self.local_commands.append(argv)
        self.check_command("local", argv)
        # Base64 of "dev": what the certificate files would hold, as far as parsing goes.
        return "ZGV2"

    # --- resources ---

    def port_forward(self, local_port, container_port=None, name=None, link_path=None, host=None):
        return {"local": local_port, "container": container_port or local_port, "name": name}

    def k8s_resource(self, workload="", new_name="", port_forwards=None, resource_deps=None,
                     objects=None, labels=None, **kwargs):
        forwards = []
        for forward in port_forwards or []:
            if isinstance(forward, dict):
                forwards.append(forward)
            else:
                text = str(forward)
                local_port, _, container = text.partition(":")
                forwards.append({"local": int(local_port), "container": int(container or local_port)})
        self.resources.append({
            "workload": workload,
            "name": new_name or workload,
            "port_forwards": forwards,
            "resource_deps": list(resource_deps or []),
            "objects": list(objects or []),
        })

    def local_resource(self, name, cmd="", deps=None, serve_cmd="", resource_deps=None,
                       **kwargs):
        for dep in deps or []:
            self.path("local_resource(%r) deps" % name, dep)
        for command in [cmd, serve_cmd]:
            if command:
                self.check_command("local_resource(%r)" % name, shlex.split(command))
        self.local_resources.append({
            "name": name,
            "cmd": cmd,
            "resource_deps": list(resource_deps or []),
        })

    def check_command(self, what, argv):
        """Words of a command that name files of this repository must exist."""
        for word in argv:
            value = word.split("=", 1)[1] if word.startswith(("DEVPLANE=",)) else word
            for token in shlex.split(value) if " " in value else [value]:
                top = token.split("/", 1)[0]
                if "/" in token and not token.startswith(("-", "/", ".tilt-dev")) and \
                        os.path.exists(os.path.join(self.repo, top)):
                    self.path(what, token)

    def noop(self, *args, **kwargs):
        return None


def evaluate(repo, tiltfile):
    recorder = Recorder(repo)
    module = starlark.Module()
    for name in [
        "docker_build", "kustomize", "k8s_yaml", "read_file", "listdir",
        "decode_yaml_stream", "encode_yaml_stream", "local", "port_forward", "k8s_resource",
        "local_resource",
    ]:
        module.add_callable(name, getattr(recorder, name))
    for name in ["watch_settings", "update_settings", "allow_k8s_contexts"]:
        module.add_callable(name, recorder.noop)
    module["TRIGGER_MODE_AUTO"] = 1
    module["TRIGGER_MODE_MANUAL"] = 2
    source = open(tiltfile).read()
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        # Tilt's dialect: top-level `for` and `if` are allowed.
        ast = starlark.parse("Tiltfile", source, starlark.Dialect.extended())
        starlark.eval(module, ast, starlark.Globals.standard())
    finally:
        os.chdir(cwd)
    return recorder


def image_name(image):
    """`registry/name:tag@digest` -> `registry/name` (what docker_build matches on)."""
    image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        image = image[: len(image) - len(last)] + last.split(":", 1)[0]
    return image


def selector_matches(selector, obj):
    parts = selector.lower().split(":")
    meta = obj.get("metadata", {})
    actual = [meta.get("name", ""), obj.get("kind", ""), meta.get("namespace", "")]
    return all(want == have.lower() for want, have in zip(parts, actual))


def check(recorder):
    objects = recorder.objects
    workloads = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "Deployment"}
    resources = {r["name"]: r for r in recorder.resources}
    known = set(resources) | {r["name"] for r in recorder.local_resources} | set(workloads)

    # Every image a workload runs is built here, and every image built is run.
    run = set()
    for name, workload in workloads.items():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            image = image_name(container["image"])
            run.add(image)
            if image not in recorder.images:
                recorder.problem("Deployment %s runs image %s that no docker_build builds"
                                 % (name, container["image"]))
    for image in recorder.images:
        if image not in run:
            recorder.problem("docker_build(%r): no workload runs it" % image)

    grouped = set()
    for resource in recorder.resources:
        workload = resource["workload"]
        if workload and workload not in workloads:
            recorder.problem("k8s_resource(%r): no such workload in the manifests" % workload)
        for selector in resource["objects"]:
            matches = [i for i, o in enumerate(objects) if selector_matches(selector, o)]
            if len(matches) != 1:
                recorder.problem("k8s_resource(%r) objects: %r matches %d objects"
                                 % (resource["name"], selector, len(matches)))
            for i in matches:
                if objects[i].get("kind") == "Deployment":
                    recorder.problem("k8s_resource(%r) objects: %r is a workload"
                                     % (resource["name"], selector))
                grouped.add(i)
        for dep in resource["resource_deps"]:
            if dep not in known:
                recorder.problem("k8s_resource(%r) depends on unknown resource %r"
                                 % (resource["name"], dep))
        if resource["port_forwards"]:
            target = workloads.get(workload)
            ports = set()
            if target:
                for container in target["spec"]["template"]["spec"]["containers"]:
                    for port in container.get("ports", []):
                        if port.get("protocol", "TCP") == "TCP":
                            ports.add(port["containerPort"])
            for forward in resource["port_forwards"]:
                if forward["container"] not in ports:
                    recorder.problem("k8s_resource(%r) forwards to container port %s, which "
                                     "no container exposes over TCP"
                                     % (resource["name"], forward["container"]))
    for resource in recorder.local_resources:
        for dep in resource["resource_deps"]:
            if dep not in known:
                recorder.problem("local_resource(%r) depends on unknown resource %r"
                                 % (resource["name"], dep))

    # Nothing lands in Tilt's "uncategorized": each object is a workload, grouped explicitly,
    # or a Service selecting a workload's pods.
    for i, obj in enumerate(objects):
        kind, name = obj.get("kind"), obj["metadata"]["name"]
        if kind == "Deployment" or i in grouped:
            if kind == "Deployment" and name not in resources:
                recorder.problem("Deployment %s has no k8s_resource" % name)
            continue
        if kind == "Service":
            selector = obj["spec"].get("selector", {})
            if any(
                selector and selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
                for w in workloads.values()
            ):
                continue
        recorder.problem("%s %s is in no Tilt resource" % (kind, name))


def main():
    repo = os.path.abspath(sys.argv[1])
    tiltfile = sys.argv[2] if len(sys.argv) > 2 else os.path.join(repo, "Tiltfile")
    try:
        recorder = evaluate(repo, tiltfile)
    except starlark.StarlarkError as error:
        print("the Tiltfile does not evaluate: %s" % error)
        return 1
    check(recorder)
    if recorder.problems:
        for problem in recorder.problems:
            print(problem)
        return 1
    print(json.dumps({
        "images": recorder.images,
        "objects": len(recorder.objects),
        "resources": {
            r["name"]: {
                "workload": r["workload"],
                "objects": len(r["objects"]),
                "port_forwards": [f["container"] for f in r["port_forwards"]],
                "resource_deps": r["resource_deps"],
            }
            for r in recorder.resources
        },
        "local_resources": [r["name"] for r in recorder.local_resources],
        "local_commands": recorder.local_commands,
    }, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
