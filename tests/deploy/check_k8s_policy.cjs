// check_k8s_policy.cjs - checks that the rendered Kubernetes manifests of
// deploy/k8s do what the deployment needs, beyond schema validity: probes
// on the right routes, resources, non-root and read-only root, a grace
// period that covers the drain, selectors that match, references that
// resolve (PVCs, Secret, HPA target), and a training Job that writes into
// the shared models volume.
//
// usage: node tests/deploy/check_k8s_policy.cjs NODE_MODULES SERVICE.yaml TRAIN.yaml
// Prints one line per check; exits 0 when all pass, 1 otherwise.
"use strict";
const fs = require("fs");
const path = require("path");
const { createRequire } = require("module");

if (process.argv.length !== 5) {
  console.error("usage: check_k8s_policy.cjs NODE_MODULES SERVICE.yaml TRAIN.yaml");
  process.exit(2);
}
const req = createRequire(path.join(path.resolve(process.argv[2]), "resolve-from-here.js"));
const YAML = req("yaml");
const load = (f) => YAML.parseAllDocuments(fs.readFileSync(f, "utf8")).map((d) => d.toJS()).filter(Boolean);
const svcDocs = load(process.argv[3]);
const trainDocs = load(process.argv[4]);

let failures = 0;
function check(what, cond, detail) {
  console.log(`${cond ? "ok  " : "FAIL"} ${what}${cond || !detail ? "" : ": " + detail}`);
  if (!cond) failures++;
}
const find = (docs, kind, name) => docs.find((d) => d.kind === kind && (!name || d.metadata.name === name));
const matches = (selector, labels) =>
  Object.entries(selector || {}).every(([k, v]) => labels && labels[k] === v) && Object.keys(selector || {}).length > 0;
const envValue = (c, name) => (c.env || []).find((e) => e.name === name);
const MODELS_DIR = "/var/lib/dae/models"; // the image's DAE_MODELS_DIR

const dep = find(svcDocs, "Deployment", "dae");
check("a Deployment named dae", !!dep);
if (dep) {
  const pod = dep.spec.template.spec;
  const c = pod.containers[0];
  const podLabels = dep.spec.template.metadata.labels;
  check("at least 2 replicas", dep.spec.replicas >= 2, `replicas ${dep.spec.replicas}`);
  check("rolling update never drops below the replica count", dep.spec.strategy.rollingUpdate.maxUnavailable === 0);
  check("readiness probe GET /readyz", c.readinessProbe && c.readinessProbe.httpGet.path === "/readyz");
  check("liveness probe GET /healthz", c.livenessProbe && c.livenessProbe.httpGet.path === "/healthz");
  const r = c.resources || {};
  check(
    "CPU and memory requests and limits",
    r.requests && r.limits && r.requests.cpu && r.requests.memory && r.limits.cpu && r.limits.memory,
  );
  const sc = pod.securityContext || {};
  const csc = c.securityContext || {};
  check("runs as non-root", sc.runAsNonRoot === true && sc.runAsUser > 0, JSON.stringify(sc));
  check("read-only root file system", csc.readOnlyRootFilesystem === true);
  check("no privilege escalation, no capabilities", csc.allowPrivilegeEscalation === false &&
    csc.capabilities && (csc.capabilities.drop || []).includes("ALL"));
  const drain = Number((envValue(c, "DAE_DRAIN_TIMEOUT") || {}).value || 20);
  const preStop = c.lifecycle && c.lifecycle.preStop && c.lifecycle.preStop.exec
    ? Number(c.lifecycle.preStop.exec.command[1]) : 0;
  const grace = pod.terminationGracePeriodSeconds;
  check(
    "terminationGracePeriodSeconds covers preStop + drain deadline, with at most 15 s to spare",
    grace >= preStop + drain && grace <= preStop + drain + 15,
    `grace ${grace}, preStop ${preStop}, DAE_DRAIN_TIMEOUT ${drain}`,
  );
  const modelsMount = (c.volumeMounts || []).find((m) => m.mountPath === MODELS_DIR);
  const modelsVol = modelsMount && pod.volumes.find((v) => v.name === modelsMount.name);
  check(
    `the shared models PVC is mounted at ${MODELS_DIR}`,
    modelsVol && modelsVol.persistentVolumeClaim && find(svcDocs, "PersistentVolumeClaim", modelsVol.persistentVolumeClaim.claimName),
  );
  const pvc = modelsVol && find(svcDocs, "PersistentVolumeClaim", modelsVol.persistentVolumeClaim.claimName);
  check("the models PVC is ReadWriteMany (replicas on several nodes)", pvc && pvc.spec.accessModes.includes("ReadWriteMany"));
  check("/tmp is a writable volume", (c.volumeMounts || []).some((m) => m.mountPath === "/tmp"));
  const tok = envValue(c, "DAE_ADMIN_TOKEN");
  const ref = tok && tok.valueFrom && tok.valueFrom.secretKeyRef;
  const secret = ref && find(svcDocs, "Secret", ref.name);
  check(
    "DAE_ADMIN_TOKEN comes from a Secret in the manifests",
    secret && ((secret.stringData && ref.key in secret.stringData) || (secret.data && ref.key in secret.data)),
  );
  const svc = find(svcDocs, "Service", "dae");
  check("the Service selects the pods", svc && matches(svc.spec.selector, podLabels));
  check(
    "the Service targets the container's http port",
    svc && (c.ports || []).some((p) => p.name === svc.spec.ports[0].targetPort || p.containerPort === svc.spec.ports[0].targetPort),
  );
  const hpa = find(svcDocs, "HorizontalPodAutoscaler");
  check("the HPA scales the Deployment", hpa && hpa.spec.scaleTargetRef.kind === "Deployment" &&
    hpa.spec.scaleTargetRef.name === "dae" && hpa.spec.minReplicas >= 2 && hpa.spec.maxReplicas > hpa.spec.minReplicas);
  const pdb = find(svcDocs, "PodDisruptionBudget");
  check("the PDB selects the pods", pdb && matches(pdb.spec.selector.matchLabels, podLabels));
  check("every object in one namespace", svcDocs.filter((d) => d.kind !== "Namespace").every((d) => d.metadata.namespace === "dae"));
}

const job = find(trainDocs, "Job");
check("a training Job", !!job);
if (job) {
  const pod = job.spec.template.spec;
  const c = pod.containers[0];
  const args = [...(c.command || []), ...(c.args || [])];
  check("the Job runs dae train", args[0] === "dae" && args[1] === "train", args.join(" "));
  const out = args[args.indexOf("--out") + 1] || "";
  check(`the Job writes its model into ${MODELS_DIR}`, out.startsWith(MODELS_DIR + "/") && out.endsWith(".safetensors"), out);
  const mount = (c.volumeMounts || []).find((m) => m.mountPath === MODELS_DIR);
  const vol = mount && pod.volumes.find((v) => v.name === mount.name);
  const depVol = dep && dep.spec.template.spec.volumes.find((v) => v.persistentVolumeClaim);
  check("the Job mounts the same models PVC as the Deployment", vol && vol.persistentVolumeClaim && depVol &&
    vol.persistentVolumeClaim.claimName === depVol.persistentVolumeClaim.claimName && !mount.readOnly);
  check("every PVC the Job uses is in the manifests", pod.volumes.filter((v) => v.persistentVolumeClaim)
    .every((v) => find(svcDocs, "PersistentVolumeClaim", v.persistentVolumeClaim.claimName)));
  check("the Job runs as non-root with a read-only root", pod.securityContext.runAsNonRoot === true &&
    c.securityContext.readOnlyRootFilesystem === true);
  check("the Job never restarts in place and has a deadline", pod.restartPolicy === "Never" && job.spec.activeDeadlineSeconds > 0);
  check("the Job is in the service's namespace", job.metadata.namespace === "dae");
}
console.log(failures === 0 ? "policy: all checks pass" : `policy: ${failures} check(s) failed`);
process.exit(failures === 0 ? 0 : 1);
