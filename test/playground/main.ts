// `npm run playground`: a throw-away cluster with one simulated GPU node and gpu-dra installed
// from deploy/, to look around with kubectl (or `gpu-dra explain`). Run as
//
//   node --import ./test/playground/loader.js test/playground/main.ts [options]
//
// It starts the real control plane from test/peers (built on first use), a kubelet-dra node
// with the fake NVML profile given, applies deploy/ (the DaemonSet controller puts the plugin pod
// on the node; the `gpu-dra driver` process runs in its place with the pod's env, mounts and
// pod-bound ServiceAccount token, see install.ts), applies one example claim and its pod, prints
// what the pod got, and stays up until Ctrl-C/SIGTERM, then removes everything.
// Progress goes to stderr, the report to stdout.
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { CoreV1Api, ResourceV1Api, type V1Pod } from '@kubernetes/client-node';

import { renderExplainReport, runExplain } from '../../src/cli/actions/explain.js';
import { createSimulatedNode } from '../../src/sim/fakeHost.js';
import { ConfigError } from '../../src/util/errors.js';
import { buildFakeNvml, listProfiles } from '../../src/sim/fakeNvml.js';
import { DEFAULT_CONTROLLERS, startCluster, type Cluster } from '../e2e/support/cluster.js';
import { preparedContainers, startNode, type KubeletEvent, type NodeHarness } from '../e2e/support/node.js';
import { DEFAULT_K8S_VERSION, ensurePeersBinary } from '../e2e/support/peers.js';
import { sleep } from '../e2e/support/process.js';
import {
  applyObjects,
  deployManifests,
  describeObject,
  DRIVER_BUNDLE,
  EXAMPLES_DIR,
  GPU_NODE_LABEL,
  INSTALL_APISERVER_ARGS,
  INSTALL_CONTROLLERS,
  loadYaml,
  nodeNameOf,
  requestPodBoundToken,
  ROOT,
  runPluginProcess,
  waitForDefaultServiceAccount,
  waitForPluginPod,
  whoAmI,
} from './install.js';

const DRIVER = 'gpu.dra.dev';
/** Lifetime of the plugin's pod-bound token (rotated at 80%, as the kubelet does). */
const TOKEN_TTL_S = 3600;
const USAGE = `usage: npm run playground [-- options]

  --profile NAME       fake NVML profile of the GPU node (default h100-8x)
  --example FILE       claim + pod to apply (default examples/claims/single-gpu.yaml)
  --node NAME          node name (default gpu-node)
  --exit-after-setup   print the report, then tear down and exit (also PLAYGROUND_EXIT=1)
  -h, --help

Kubernetes version: GPU_DRA_K8S_VERSION (default ${DEFAULT_K8S_VERSION}).
`;

interface OciSpec {
  process?: { env?: string[] };
  linux?: { devices?: { path: string; type: string; major: number; minor: number }[] };
  mounts?: { destination: string; source: string; type?: string; options?: string[] }[];
  hooks?: Record<string, { path: string; args?: string[] }[] | undefined>;
}

function progress(message: string): void {
  process.stderr.write(`[playground] ${message}\n`);
}

function out(line = ''): void {
  process.stdout.write(`${line}\n`);
}

function resolveExample(file: string): string {
  for (const candidate of [
    path.resolve(file),
    path.join(EXAMPLES_DIR, file),
    path.join(EXAMPLES_DIR, `${file}.yaml`),
  ])
    if (fs.existsSync(candidate) && fs.statSync(candidate).isFile()) return candidate;
  throw new Error(`no example ${file} (try one of ${fs.readdirSync(EXAMPLES_DIR).join(', ')})`);
}

type Outcome = { kind: 'running'; prepared: KubeletEvent } | { kind: 'pending'; why: string };

/**
 * Waits until the pod runs on the node, or the scheduler has said for 10 s that it cannot place
 * it (a first verdict can predate the scheduler seeing the node's ResourceSlices).
 */
async function podOutcome(core: CoreV1Api, node: NodeHarness, ns: string, name: string): Promise<Outcome> {
  const deadline = Date.now() + 120_000;
  let unschedulableSince: number | undefined;
  for (;;) {
    const key = `${ns}/${name}`;
    const running = node.events.find((e) => e.event === 'running' && e['pod'] === key);
    const prepared = node.events.find((e) => e.event === 'prepared' && e['pod'] === key);
    if (running && prepared) return { kind: 'running', prepared };
    const pod = await core.readNamespacedPod({ namespace: ns, name });
    const cond = pod.status?.conditions?.find((c) => c.type === 'PodScheduled' && c.status === 'False');
    unschedulableSince = cond ? (unschedulableSince ?? Date.now()) : undefined;
    if (cond && unschedulableSince !== undefined && Date.now() - unschedulableSince > 10_000)
      return { kind: 'pending', why: `${cond.reason ?? ''}: ${cond.message ?? ''}` };
    if (Date.now() > deadline) {
      const last = node.events.filter((e) => e['pod'] === key).at(-1);
      return {
        kind: 'pending',
        why: `not running after 120 s${last ? `; node: ${JSON.stringify(last)}` : ''}`,
      };
    }
    await sleep(250);
  }
}

async function printAllocation(cluster: Cluster, pod: V1Pod): Promise<void> {
  const resource = cluster.kubeConfig.makeApiClient(ResourceV1Api);
  const slices = (await resource.listResourceSlice()).items;
  for (const st of pod.status?.resourceClaimStatuses ?? []) {
    if (!st.resourceClaimName) continue;
    const claim = await resource.readNamespacedResourceClaim({
      namespace: pod.metadata?.namespace ?? 'default',
      name: st.resourceClaimName,
    });
    out(
      `Allocation: ResourceClaim ${claim.metadata?.namespace ?? ''}/${claim.metadata?.name ?? ''} (status.allocation.devices.results)`,
    );
    for (const r of claim.status?.allocation?.devices?.results ?? []) {
      const device = slices
        .filter((s) => s.spec.driver === r.driver && s.spec.pool.name === r.pool)
        .flatMap((s) => s.spec.devices ?? [])
        .find((d) => d.name === r.device);
      const attrs = device?.attributes ?? {};
      const what = [attrs['productName']?.string ?? attrs['profile']?.string, attrs['uuid']?.string]
        .filter((x) => x !== undefined)
        .join(', ');
      out(`  request ${r.request} -> ${r.driver} ${r.pool}/${r.device}${what ? `  (${what})` : ''}`);
    }
  }
}

function printCdiEdits(prepared: KubeletEvent, podEnv: Set<string>): void {
  for (const ctr of preparedContainers(prepared)) {
    out(
      `CDI edits for container ${ctr.name} (the node's "prepared" event: the OCI spec after CDI injection)`,
    );
    out(`  CDI devices: ${ctr.cdiDevices.join(' ') || '(none)'}`);
    if (ctr.cdiError) out(`  CDI error:   ${ctr.cdiError}`);
    const oci = (ctr.ociSpec ?? {}) as OciSpec;
    const devices = oci.linux?.devices ?? [];
    out(`  device nodes (${String(devices.length)}):`);
    for (const d of devices) out(`    ${d.path}  ${d.type} ${String(d.major)}:${String(d.minor)}`);
    // The harness's base spec has PATH, HOSTNAME and the container's own env; the rest is CDI's.
    const env = (oci.process?.env ?? []).filter(
      (e) => !/^(PATH|HOSTNAME)=/.test(e) && !podEnv.has(e.split('=')[0] ?? ''),
    );
    out(`  env (${String(env.length)}):`);
    for (const e of env) out(`    ${e}`);
    const mounts = (oci.mounts ?? []).filter((m) => m.type !== 'proc');
    out(`  mounts (${String(mounts.length)}):`);
    for (const m of mounts) out(`    ${m.destination}  <-  ${m.source}  (${(m.options ?? []).join(',')})`);
    for (const [when, hooks] of Object.entries(oci.hooks ?? {}))
      for (const h of hooks ?? []) out(`  hook ${when}: ${[h.path, ...(h.args ?? []).slice(1)].join(' ')}`);
  }
}

/**
 * Two other examples to suggest: one this node can satisfy and one it cannot (as `gpu-dra
 * explain` judges them against the cluster's slices).
 */
async function exampleHints(
  kubeconfig: string,
  applied: string,
): Promise<{ fits?: string; pending?: string }> {
  const prefer = ['mig-1g.yaml', 'gpu-min-memory.yaml'];
  const files = fs
    .readdirSync(EXAMPLES_DIR)
    .filter((f) => f.endsWith('.yaml') && path.join(EXAMPLES_DIR, f) !== applied)
    .sort((a, b) => (prefer.includes(b) ? 1 : 0) - (prefer.includes(a) ? 1 : 0) || a.localeCompare(b));
  const hints: { fits?: string; pending?: string } = {};
  for (const file of files) {
    let reports;
    try {
      reports = await runExplain({ filename: path.join(EXAMPLES_DIR, file), kubeconfig, driverName: DRIVER });
    } catch (err) {
      // extended-resource-pod.yaml has no claim where the apiserver dropped the class's
      // extendedResourceName (1.34 without DRAExtendedResource): not an example for this cluster.
      if (err instanceof ConfigError) continue;
      throw err;
    }
    if (reports.every((r) => r.satisfiable)) hints.fits ??= file;
    else hints.pending ??= file;
  }
  return hints;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      profile: { type: 'string', default: 'h100-8x' },
      example: { type: 'string', default: 'single-gpu.yaml' },
      node: { type: 'string', default: 'gpu-node' },
      'exit-after-setup': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const exitAfterSetup = values['exit-after-setup'] || process.env['PLAYGROUND_EXIT'] === '1';
  const profiles = await listProfiles();
  if (!profiles.includes(values.profile))
    throw new Error(`unknown profile ${values.profile}; profiles: ${profiles.join(', ')}`);
  const exampleFile = resolveExample(values.example);
  const driverMain = path.join(ROOT, DRIVER_BUNDLE);
  if (!fs.existsSync(driverMain)) throw new Error(`${driverMain} is missing: run \`npm run build\` first`);
  const nodeName = values.node;

  progress('Kubernetes peers: test/peers/build.sh (first use builds them: ~20 min on 2 cores; cached after)');
  const binary = await ensurePeersBinary();
  const nvmlLib = await buildFakeNvml();

  let cluster: Cluster | undefined;
  let rotation: NodeJS.Timeout | undefined;
  let stopping: Promise<void> | undefined;
  const keepAlive = setInterval(() => undefined, 1 << 30);
  const shutdown = (why: string): Promise<void> => {
    stopping ??= (async () => {
      progress(`${why}: stopping the driver, the node and the control plane`);
      clearInterval(keepAlive);
      clearInterval(rotation);
      await cluster?.stop();
      progress('stopped; everything removed');
    })();
    return stopping;
  };
  let interrupted: (() => void) | undefined;
  const signalled = new Promise<void>((resolve) => {
    interrupted = resolve;
  });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      if (stopping) {
        progress(`${sig} again: killing everything now`);
        process.exit(130);
      }
      interrupted?.();
      void shutdown(sig).then(() => process.exit(0));
    });
  }

  try {
    cluster = await startCluster({
      binary,
      nodeNames: [nodeName],
      apiserverArgs: INSTALL_APISERVER_ARGS,
      controllers: [...DEFAULT_CONTROLLERS, ...INSTALL_CONTROLLERS],
    });
    const c = cluster;
    const sim = await createSimulatedNode(values.profile, path.join(c.dir, 'sim', nodeName), {
      libPath: nvmlLib,
    });
    // The NVIDIA container toolkit's ldcache hook, where the host would have it.
    fs.writeFileSync(path.join(sim.hostPaths.driverRoot, 'usr/bin/nvidia-cdi-hook'), '#!/bin/sh\n', {
      mode: 0o755,
    });
    progress(
      `node ${nodeName}: kubelet-dra with fake NVML profile ${values.profile} (${String(sim.config.gpus.length)} GPUs)`,
    );
    const node = await startNode(c, nodeName, { extraArgs: [`--node-labels=${GPU_NODE_LABEL}`] });
    c.attach({ name: node.nodeName, logs: (n) => node.logs(n), stop: () => node.stop() });

    const manifests = deployManifests();
    const objects = manifests.flatMap((m) => m.objects);
    await applyObjects(c.kubeConfig, objects);
    progress(`applied deploy/ (${manifests.map((m) => m.file).join(', ')})`);

    const pod = await waitForPluginPod(c.kubeConfig, nodeName);
    const kubelet = c.kubeConfigFor(c.nodeToken(nodeName));
    const token = await requestPodBoundToken(kubelet, pod, TOKEN_TTL_S);
    const user = await whoAmI(c.kubeConfigFor(token));
    const plugin = await runPluginProcess({ cluster: c, node, sim, pod, token });
    await node.waitForEvent((e) => e.event === 'registered' && e['driver'] === DRIVER, 30_000);
    // Like the kubelet: a fresh token for the projected volume at 80% of its lifetime.
    rotation = setInterval(() => {
      requestPodBoundToken(kubelet, pod, TOKEN_TTL_S).then(
        (next) => {
          plugin.rotateToken(next);
        },
        (err: unknown) => {
          progress(`token rotation failed: ${String(err)}`);
        },
      );
    }, TOKEN_TTL_S * 800);
    void plugin.peer.exited.then(() => {
      if (!stopping)
        progress(`the driver exited (${plugin.logFile}); the playground keeps running without it`);
    });
    const resource = c.kubeConfig.makeApiClient(ResourceV1Api);
    const slices = (await resource.listResourceSlice({ fieldSelector: `spec.nodeName=${nodeName}` })).items;
    const devices = slices.flatMap((s) => s.spec.devices ?? []).map((d) => d.name);

    const exampleObjects = loadYaml(exampleFile);
    const exampleNs = 'default';
    await waitForDefaultServiceAccount(c.kubeConfig, exampleNs);
    await applyObjects(c.kubeConfig, exampleObjects, exampleNs);
    const exampleRel = path.relative(ROOT, exampleFile);
    progress(`applied ${exampleRel}`);
    const core = c.kubeConfig.makeApiClient(CoreV1Api);
    const examplePods = exampleObjects.filter((o) => o.kind === 'Pod').map((o) => o.metadata.name);
    const outcomes = new Map<string, Outcome>();
    for (const name of examplePods) outcomes.set(name, await podOutcome(core, node, exampleNs, name));

    out();
    out('gpu-dra playground');
    out(
      `  control plane  ${c.apiserverUrl}  (Kubernetes ${c.version === 'default' ? DEFAULT_K8S_VERSION : c.version}, etcd, scheduler, controller-manager)`,
    );
    out(
      `  node           ${nodeName}  (kubelet-dra harness; fake NVML profile ${values.profile}: ${String(sim.config.gpus.length)} GPUs)`,
    );
    for (const [i, m] of manifests.entries())
      out(
        `  ${i === 0 ? 'deploy/      ' : '             '}  ${m.file}: ${m.objects.map(describeObject).join(', ')}`,
      );
    out(
      `  plugin pod     ${pod.metadata?.namespace ?? ''}/${pod.metadata?.name ?? ''} Running on ${nodeName} (created by the DaemonSet controller)`,
    );
    out(
      `  driver         gpu-dra ${plugin.container.args.join(' ')} (pid ${String(plugin.peer.child.pid)}) as ${user.username ?? '?'}, node-name ${nodeNameOf(user) ?? '(none)'} from its pod-bound token`,
    );
    out(
      `  published      ${String(devices.length)} devices in ${String(slices.length)} ResourceSlice(s): ${devices.join(' ')}`,
    );
    out(
      `  example        ${exampleRel}: ${examplePods.map((p) => `pod ${exampleNs}/${p} ${outcomes.get(p)?.kind === 'running' ? 'Running' : 'Pending'}`).join(', ')}`,
    );
    for (const name of examplePods) {
      const outcome = outcomes.get(name);
      const p = await core.readNamespacedPod({ namespace: exampleNs, name });
      out();
      if (outcome?.kind === 'running') {
        out(`Pod ${exampleNs}/${name}: ${p.status?.phase ?? '?'} on ${p.spec?.nodeName ?? '?'}`);
        await printAllocation(c, p);
        printCdiEdits(
          outcome.prepared,
          new Set((p.spec?.containers ?? []).flatMap((x) => (x.env ?? []).map((e) => e.name))),
        );
      } else {
        out(`Pod ${exampleNs}/${name}: Pending: ${outcome?.why ?? '?'}`);
        out(`gpu-dra explain -f ${exampleRel} --kubeconfig ...:`);
        const reports = await runExplain({
          filename: exampleFile,
          kubeconfig: c.adminKubeconfigPath,
          driverName: DRIVER,
        });
        for (const r of reports)
          for (const line of renderExplainReport(r).trimEnd().split('\n')) out(`  ${line}`);
      }
    }

    const kcfg = c.adminKubeconfigPath;
    out();
    out(`Kubeconfig (cluster admin): ${kcfg}`);
    out();
    const hints = await exampleHints(kcfg, exampleFile);
    out('Try (kubectl, if installed):');
    out(`  export KUBECONFIG=${kcfg}`);
    out('  kubectl get nodes,pods -A -o wide');
    out('  kubectl get deviceclasses,resourceslices,resourceclaims -A');
    out('  kubectl get resourceslices -o yaml            # the devices the driver published');
    out(`  kubectl get resourceclaims -n ${exampleNs} -o yaml   # the allocation`);
    if (hints.fits) out(`  kubectl apply -f examples/claims/${hints.fits}   # fits this node`);
    if (hints.pending) {
      out(
        `  kubectl apply -f examples/claims/${hints.pending}   # cannot fit this node: stays Pending; ask why:`,
      );
      out(
        `  KUBECONFIG=${kcfg} node dist/gpu-dra.mjs explain -f examples/claims/${hints.pending} --kubeconfig ${kcfg}`,
      );
    }
    out('  (node dist/gpu-dra.mjs is the gpu-dra command)');
    out();
    out('Logs:');
    out(`  control plane  ${path.join(c.dir, 'logs')}/`);
    out(`  node           ${node.logFile}, events ${node.eventsFile}`);
    out(`  driver         ${plugin.logFile}`);
    out(`  driver HTTP    ${plugin.httpUrl}/metrics  /healthz  /readyz`);
    out();

    if (exitAfterSetup) {
      await shutdown('--exit-after-setup');
      return 0;
    }
    out(`Running until Ctrl-C (or SIGTERM); then everything under ${c.dir} is removed.`);
    await signalled;
    await stopping;
    return 0;
  } catch (err) {
    cluster?.dumpLogs(40);
    await shutdown('error');
    throw err;
  }
}

main().then(
  (code) => {
    process.exit(code);
  },
  (err: unknown) => {
    process.stderr.write(`playground: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
