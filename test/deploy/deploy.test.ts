/**
 * deploy/: the plain manifests, their Helm chart, the Dockerfile. Checks that the manifests
 * say what the code needs (RBAC verbs = the API calls made, env names = the driver's flags,
 * mounts = the directories it uses), that the DeviceClasses equal the ones `explain` assumes,
 * that the admission policy lets a node's plugin write only its own node's slices, and that
 * `helm template` with default values renders the same objects as the plain manifests.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Environment } from '@marcbachmann/cel-js';
import { Command } from 'commander';
import { parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { defaultDeviceClasses } from '../../src/cel/classes.js';
import { explainClaim } from '../../src/cel/explain.js';
import { compileSelector } from '../../src/cel/index.js';
import { registerDriverCommand } from '../../src/cli/commands/driver.js';
import { DRIVER_FLAGS, driverFlagNames } from '../../src/node/flags.js';
import { STOP_CALL_GRACE_MS, STOP_SETTLE_MS } from '../../src/node/run.js';
import { inventoryFixture } from '../support/inventoryFixture.js';
import { buildSlices } from '../../src/resourceslice/model.js';
import { PUBLISHER_RBAC_RULES } from '../../src/resourceslice/publisher.js';
import { claimStatusRbacRules } from '../../src/driver/statusWriter.js';
import type { DeviceClass } from '../../src/api/resource.js';
import { NODE_EVENT_NAMESPACE } from '../../src/kube/events.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const DEPLOY = path.join(ROOT, 'deploy');
const NAMESPACE = 'gpu-dra';
const SA = 'gpu-dra-kubelet-plugin';

type K8sObject = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [key: string]: unknown;
};

/**
 * The apiserver's rule for DeviceClass spec.extendedResourceName (IsExtendedResourceName in
 * pkg/apis/core/v1/helper): a domain-prefixed name outside *kubernetes.io whose quota form
 * `requests.<name>` is a qualified name (DNS-subdomain prefix, then a name of at most 63 of
 * [A-Za-z0-9._-] starting and ending alphanumeric).
 */
function isExtendedResourceName(name: string): boolean {
  if (!name.includes('/') || name.includes('kubernetes.io/') || name.startsWith('requests.')) return false;
  const [prefix, local, ...rest] = `requests.${name}`.split('/');
  if (prefix === undefined || local === undefined || rest.length > 0) return false;
  const subdomain = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
  const qualified = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
  return prefix.length <= 253 && subdomain.test(prefix) && local.length <= 63 && qualified.test(local);
}

function parseYaml(text: string, source: string): K8sObject[] {
  return parseAllDocuments(text)
    .map((d) => {
      expect(d.errors, source).toEqual([]);
      return d.toJS() as K8sObject | null;
    })
    .filter((o): o is K8sObject => o !== null);
}
const load = (file: string): K8sObject[] => parseYaml(fs.readFileSync(path.join(DEPLOY, file), 'utf8'), file);
const MANIFESTS = [
  'namespace.yaml',
  'deviceclass.yaml',
  'rbac.yaml',
  'validatingadmissionpolicy.yaml',
  'daemonset.yaml',
];
const all = MANIFESTS.flatMap(load);
const EVENTS_ROLE = 'gpu-dra-kubelet-plugin-events';
const find = (kind: string, name?: string): K8sObject => {
  const o = all.find((x) => x.kind === kind && (name === undefined || x.metadata.name === name));
  if (!o) throw new Error(`no ${kind} ${name ?? ''}`);
  return o;
};

interface Container {
  name: string;
  image: string;
  args?: string[];
  env: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
  ports: { name: string; containerPort: number; hostPort?: number }[];
  securityContext: { privileged?: boolean };
  resources: { requests?: Record<string, string>; limits?: Record<string, string> };
  startupProbe: { httpGet: { path: string; port: string | number } };
  readinessProbe: { httpGet: { path: string; port: string | number } };
  livenessProbe: { httpGet: { path: string; port: string | number } };
  volumeMounts: { name: string; mountPath: string; readOnly?: boolean }[];
}
interface PodSpec {
  serviceAccountName: string;
  hostNetwork?: boolean;
  terminationGracePeriodSeconds: number;
  priorityClassName: string;
  nodeSelector: Record<string, string>;
  tolerations: { key: string; operator: string; effect?: string }[];
  containers: Container[];
  volumes: { name: string; hostPath?: { path: string; type?: string } }[];
}

describe('deploy/ manifests', () => {
  it('kustomization lists every manifest', () => {
    const k = load('kustomization.yaml')[0] as unknown as { resources: string[] };
    expect([...k.resources].sort()).toEqual([...MANIFESTS].sort());
    const onDisk = fs.readdirSync(DEPLOY).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml');
    expect(onDisk.sort()).toEqual([...MANIFESTS].sort());
  });

  it('every object is well formed and namespaced objects live in the driver namespace', () => {
    const namespaced = new Set(['ServiceAccount', 'DaemonSet', 'Role', 'RoleBinding']);
    for (const o of all) {
      expect(o.apiVersion, o.kind).toMatch(/^[a-z0-9.]*\/?v\d+(alpha\d+|beta\d+)?$/);
      expect(o.metadata.name).toMatch(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/);
      // The Node's events go to `default` (events of cluster-scoped objects live there).
      if (namespaced.has(o.kind))
        expect(o.metadata.namespace, o.kind).toBe(o.metadata.name === EVENTS_ROLE ? 'default' : NAMESPACE);
      else expect(o.metadata.namespace, o.kind).toBeUndefined();
      expect(o.metadata.labels?.['app.kubernetes.io/name']).toBe('gpu-dra');
    }
    const ns = find('Namespace');
    expect(ns.metadata.name).toBe(NAMESPACE);
    expect(ns.metadata.labels?.['pod-security.kubernetes.io/enforce']).toBe('privileged');
  });

  it('DeviceClasses equal the ones explain assumes, and select the right devices', () => {
    const classes = all.filter((o) => o.kind === 'DeviceClass');
    const strip = (o: { metadata: { name: string }; spec: unknown }): unknown => ({
      name: o.metadata.name,
      spec: o.spec,
    });
    expect(classes.map((c) => strip(c as never))).toEqual(defaultDeviceClasses().map(strip));
    for (const c of classes as unknown as DeviceClass[]) {
      for (const s of c.spec?.selectors ?? []) expect(compileSelector(s.cel?.expression ?? '').ok).toBe(true);
    }
    const slices = (p: 'h100-8x' | 'a100-mig') => [
      ...buildSlices(inventoryFixture(p), { nodeName: 'n' }).slices,
    ];
    const request = (cls: string) => ({
      kind: 'ResourceClaim',
      spec: {
        devices: {
          requests: [{ name: 'r', exactly: { deviceClassName: cls, allocationMode: 'All' as const } }],
        },
      },
    });
    const gpu = explainClaim(request('gpu.gpu.dra.dev'), classes, [
      ...slices('h100-8x'),
      ...slices('a100-mig'),
    ]);
    expect(gpu.requests[0]?.matching.map((m) => m.split('/')[1])).toEqual([
      ...Array.from({ length: 8 }, (_, i) => `gpu-${i}`),
      'gpu-1',
    ]);
    const mig = explainClaim(request('mig.gpu.dra.dev'), classes, [
      ...slices('h100-8x'),
      ...slices('a100-mig'),
    ]);
    expect(mig.requests[0]?.matching.every((m) => m.includes('-mig-'))).toBe(true);
    expect(mig.requests[0]?.matching.length).toBe(4);
  });

  it('the whole-GPU class backs an extended resource the apiserver accepts; MIG devices none', () => {
    const byName = Object.fromEntries(
      all.filter((o) => o.kind === 'DeviceClass').map((o) => [o.metadata.name, o as unknown as DeviceClass]),
    );
    expect(byName['gpu.gpu.dra.dev']?.spec?.extendedResourceName).toBe('gpu.dra.dev/gpu');
    expect(byName['mig.gpu.dra.dev']?.spec?.extendedResourceName).toBeUndefined();
    for (const driver of ['gpu.dra.dev', 'gpu.nvidia.com', 'gpu.example.com'])
      for (const c of defaultDeviceClasses(driver))
        if (c.spec.extendedResourceName !== undefined)
          expect(isExtendedResourceName(c.spec.extendedResourceName), c.spec.extendedResourceName).toBe(true);
    // The drop-in names what the device plugin and NVIDIA's own gpu.nvidia.com class name.
    expect(defaultDeviceClasses('gpu.nvidia.com')[0]?.spec.extendedResourceName).toBe('nvidia.com/gpu');
    // The rule itself, on names it must refuse.
    for (const bad of [
      'gpu',
      'kubernetes.io/gpu',
      'x.kubernetes.io/gpu',
      'requests.a/b',
      'nvidia.com/',
      'a_b.com/gpu',
    ])
      expect(isExtendedResourceName(bad), bad).toBe(false);
  });

  it('RBAC grants exactly the verbs the code uses, nothing wildcard', () => {
    type Rule = {
      readonly apiGroups: readonly string[];
      readonly resources: readonly string[];
      readonly verbs: readonly string[];
      readonly resourceNames?: readonly string[];
    };
    const role = find('ClusterRole') as unknown as { rules: Rule[] };
    // A rule narrowed to names grants less than one without: the names are part of the key.
    const keys = (r: Rule): string[] =>
      r.apiGroups.flatMap((g) =>
        r.resources.flatMap((res) =>
          r.verbs.map((v) => `${g}/${res}:${v}${r.resourceNames ? `[${r.resourceNames.join(',')}]` : ''}`),
        ),
      );
    const granted = new Set(role.rules.flatMap(keys));
    const needed = new Set([
      ...PUBLISHER_RBAC_RULES.flatMap(keys),
      ...claimStatusRbacRules('gpu.dra.dev').flatMap(keys),
      'resource.k8s.io/resourceclaims:get',
    ]);
    expect([...granted].sort()).toEqual([...needed].sort());
    expect(JSON.stringify(role.rules)).not.toContain('*');
    const sa = find('ServiceAccount');
    expect(sa.metadata).toMatchObject({ name: SA, namespace: NAMESPACE });
    const binding = find('ClusterRoleBinding') as unknown as {
      roleRef: { kind: string; name: string };
      subjects: { kind: string; name: string; namespace: string }[];
    };
    expect(binding.roleRef).toMatchObject({ kind: 'ClusterRole', name: find('ClusterRole').metadata.name });
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: SA, namespace: NAMESPACE }]);
    // The Node Event (src/kube/events.ts): create, in its namespace only.
    const events = find('Role', EVENTS_ROLE) as unknown as { metadata: { namespace: string }; rules: Rule[] };
    expect(events.metadata.namespace).toBe(NODE_EVENT_NAMESPACE);
    expect(events.rules.flatMap(keys)).toEqual(['events.k8s.io/events:create']);
    const eventsBinding = find('RoleBinding', EVENTS_ROLE) as unknown as {
      metadata: { namespace: string };
      roleRef: { kind: string; name: string };
      subjects: unknown[];
    };
    expect(eventsBinding.metadata.namespace).toBe(NODE_EVENT_NAMESPACE);
    expect(eventsBinding.roleRef).toMatchObject({ kind: 'Role', name: EVENTS_ROLE });
    expect(eventsBinding.subjects).toEqual([{ kind: 'ServiceAccount', name: SA, namespace: NAMESPACE }]);
  });

  describe('DaemonSet', () => {
    const ds = find('DaemonSet') as unknown as {
      spec: {
        updateStrategy: unknown;
        selector: { matchLabels: Record<string, string> };
        template: { metadata: { labels: Record<string, string> }; spec: PodSpec };
      };
    };
    const pod = ds.spec.template.spec;
    const ctr = pod.containers[0] as Container;
    const env = new Map(ctr.env.map((e) => [e.name, e]));
    const envValue = (n: string): string => env.get(n)?.value ?? '';

    it('runs privileged, node-critical, on GPU nodes only, as the RBAC service account', () => {
      expect(pod.containers.length).toBe(1);
      expect(ctr.securityContext.privileged).toBe(true);
      expect(pod.priorityClassName).toBe('system-node-critical');
      expect(pod.nodeSelector).toEqual({ 'nvidia.com/gpu.present': 'true' });
      expect(pod.tolerations).toContainEqual({
        key: 'nvidia.com/gpu',
        operator: 'Exists',
        effect: 'NoSchedule',
      });
      expect(pod.serviceAccountName).toBe(SA);
      expect(ds.spec.template.metadata.labels).toMatchObject(ds.spec.selector.matchLabels);
      expect(ctr.resources.requests).toMatchObject({
        cpu: expect.any(String) as unknown,
        memory: expect.any(String) as unknown,
      });
      expect(ctr.args).toEqual(['driver']);
    });

    it('gets the node name from the downward API', () => {
      expect(env.get('NODE_NAME')?.valueFrom?.fieldRef?.fieldPath).toBe('spec.nodeName');
    });

    it('updates with no gap: the new pod starts beside the old one, which stops once it is ready', () => {
      expect(ds.spec.updateStrategy).toEqual({
        type: 'RollingUpdate',
        rollingUpdate: { maxSurge: 1, maxUnavailable: 0 },
      });
      // The pod UID names the sockets, so the two pods register side by side.
      expect(env.get('POD_UID')?.valueFrom?.fieldRef?.fieldPath).toBe('metadata.uid');
      // Two pods on one node: neither may take a host port.
      expect(pod.hostNetwork ?? false).toBe(false);
      for (const p of ctr.ports) expect(p.hostPort, p.name).toBeUndefined();
      // Stopping answers the calls in flight, then lets abandoned operations finish.
      expect(pod.terminationGracePeriodSeconds * 1_000).toBeGreaterThan(STOP_CALL_GRACE_MS + STOP_SETTLE_MS);
    });

    it('sets only environment variables that `gpu-dra driver` reads, with the values it should get', () => {
      const saved = { ...process.env };
      try {
        for (const e of ctr.env) process.env[e.name] = e.value ?? 'node-from-downward-api';
        const program = new Command();
        const cmd = registerDriverCommand(program);
        const defaults = new Map(cmd.options.map((o) => [o.attributeName(), o.defaultValue as unknown]));
        // Env twin → commander attribute, from the driver's flag table.
        const attrOf = new Map<string, string>(driverFlagNames().map((k) => [DRIVER_FLAGS[k].env, k]));
        expect([...env.keys()].filter((n) => !attrOf.has(n))).toEqual([]);
        for (const name of env.keys()) {
          expect(defaults.get(attrOf.get(name) ?? ''), name).toBe(process.env[name]);
        }
      } finally {
        for (const k of Object.keys(process.env)) if (!(k in saved)) Reflect.deleteProperty(process.env, k);
        Object.assign(process.env, saved);
      }
      expect(envValue('DRIVER_NAME')).toBe('gpu.dra.dev');
    });

    it('probes /readyz and /healthz on the --http-listen port', () => {
      const port = Number(envValue('HTTP_LISTEN').split(':').pop());
      expect(ctr.ports).toEqual([{ name: 'http', containerPort: port, protocol: 'TCP' }]);
      expect(ctr.startupProbe.httpGet).toEqual({ path: '/readyz', port: 'http' });
      expect(ctr.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'http' });
      expect(ctr.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'http' });
    });

    it('mounts the host directories the driver is told to use', () => {
      const volumes = new Map(pod.volumes.map((v) => [v.name, v.hostPath?.path]));
      const mounts = new Map(ctr.volumeMounts.map((m) => [m.mountPath, volumes.get(m.name)]));
      expect(mounts.get(envValue('KUBELET_REGISTRY_DIR'))).toBe('/var/lib/kubelet/plugins_registry');
      expect(mounts.get(envValue('KUBELET_PLUGINS_DIR'))).toBe('/var/lib/kubelet/plugins');
      expect(mounts.get(envValue('CDI_ROOT'))).toBe('/var/run/cdi');
      expect(mounts.get(envValue('NVIDIA_DRIVER_ROOT'))).toBe('/');
      // CDI mount sources are host paths: the driver-root volume's hostPath.
      expect(envValue('HOST_DRIVER_ROOT')).toBe(mounts.get(envValue('NVIDIA_DRIVER_ROOT')));
      expect(mounts.get(envValue('DEV_ROOT'))).toBe('/dev');
      // The driver reads /proc/driver/nvidia-caps/mig-minors, /proc/devices and the boot id.
      expect(mounts.get(envValue('PROC_ROOT'))).toBe('/proc');
      expect(mounts.get(envValue('SYS_ROOT'))).toBe('/sys');
      for (const m of ctr.volumeMounts) expect(volumes.has(m.name), m.name).toBe(true);
    });

    it('mounts read-only every host path but the three it writes (README, "Security")', () => {
      const writable = ctr.volumeMounts.filter((m) => m.readOnly !== true).map((m) => m.mountPath);
      expect(writable.sort()).toEqual(
        [envValue('KUBELET_REGISTRY_DIR'), envValue('KUBELET_PLUGINS_DIR'), envValue('CDI_ROOT')].sort(),
      );
    });
  });

  describe('ValidatingAdmissionPolicy (CEL evaluated with cel-js as a stand-in for the apiserver)', () => {
    const policy = find('ValidatingAdmissionPolicy') as unknown as {
      spec: {
        failurePolicy: string;
        matchConstraints: { resourceRules: { resources: string[]; operations: string[] }[] };
        matchConditions: { expression: string }[];
        variables: { name: string; expression: string }[];
        validations: { expression: string }[];
      };
    };
    const binding = find('ValidatingAdmissionPolicyBinding') as unknown as {
      spec: { policyName: string; validationActions: string[] };
    };
    const env = new Environment({
      enableOptionalTypes: true,
      unlistedVariablesAreDyn: true,
      homogeneousAggregateLiterals: false,
    });

    type Req = {
      operation: 'CREATE' | 'UPDATE' | 'DELETE';
      user: string;
      node?: string;
      object?: { nodeName?: string; driver: string };
      oldObject?: { nodeName?: string; driver: string };
    };
    const slice = (o?: { nodeName?: string; driver: string }): unknown =>
      o ? { spec: { ...(o.nodeName ? { nodeName: o.nodeName } : {}), driver: o.driver } } : null;
    /** 'skip' (not matched), 'allow' or 'deny', as the apiserver would decide. */
    function admit(r: Req): 'skip' | 'allow' | 'deny' {
      const ctx: Record<string, unknown> = {
        request: {
          operation: r.operation,
          userInfo: {
            username: r.user,
            // Like the apiserver: no `extra` at all for a user without extras (static tokens).
            ...(r.node ? { extra: { 'authentication.kubernetes.io/node-name': [r.node] } } : {}),
          },
        },
        object: slice(r.object),
        oldObject: slice(r.oldObject),
      };
      if (!policy.spec.matchConditions.every((c) => env.evaluate(c.expression, ctx) === true)) return 'skip';
      const variables: Record<string, unknown> = {};
      ctx['variables'] = variables;
      for (const v of policy.spec.variables) variables[v.name] = env.evaluate(v.expression, ctx);
      return policy.spec.validations.every((v) => env.evaluate(v.expression, ctx) === true)
        ? 'allow'
        : 'deny';
    }
    const plugin = `system:serviceaccount:${NAMESPACE}:${SA}`;
    const mine = { nodeName: 'node-a', driver: 'gpu.dra.dev' };
    const theirs = { nodeName: 'node-b', driver: 'gpu.dra.dev' };

    it('is bound, fails closed and covers ResourceSlice writes', () => {
      expect(binding.spec).toEqual({ policyName: 'gpu-dra-resourceslices', validationActions: ['Deny'] });
      expect(policy.spec.failurePolicy).toBe('Fail');
      expect(policy.spec.matchConstraints.resourceRules).toEqual([
        expect.objectContaining({
          resources: ['resourceslices'],
          operations: ['CREATE', 'UPDATE', 'DELETE'],
        }),
      ]);
      expect(JSON.stringify(policy.spec.variables)).toContain('authentication.kubernetes.io/node-name');
    });

    it("lets a node's plugin write its own node's slices only", () => {
      expect(admit({ operation: 'CREATE', user: plugin, node: 'node-a', object: mine })).toBe('allow');
      expect(
        admit({ operation: 'UPDATE', user: plugin, node: 'node-a', object: mine, oldObject: mine }),
      ).toBe('allow');
      expect(admit({ operation: 'DELETE', user: plugin, node: 'node-a', oldObject: mine })).toBe('allow');
      expect(admit({ operation: 'CREATE', user: plugin, node: 'node-a', object: theirs })).toBe('deny');
      expect(admit({ operation: 'DELETE', user: plugin, node: 'node-a', oldObject: theirs })).toBe('deny');
      expect(
        admit({ operation: 'UPDATE', user: plugin, node: 'node-a', object: mine, oldObject: theirs }),
      ).toBe('deny');
      expect(
        admit({ operation: 'UPDATE', user: plugin, node: 'node-a', object: theirs, oldObject: mine }),
      ).toBe('deny');
      expect(
        admit({ operation: 'CREATE', user: plugin, node: 'node-a', object: { driver: 'gpu.dra.dev' } }),
      ).toBe('deny');
      expect(admit({ operation: 'CREATE', user: plugin, object: mine })).toBe('deny');
      expect(
        admit({
          operation: 'CREATE',
          user: plugin,
          node: 'node-a',
          object: { nodeName: 'node-a', driver: 'other.example.com' },
        }),
      ).toBe('deny');
    });

    it('leaves other users alone', () => {
      expect(admit({ operation: 'CREATE', user: 'system:node:node-a', object: theirs })).toBe('skip');
      expect(admit({ operation: 'DELETE', user: 'admin', oldObject: theirs })).toBe('skip');
    });
  });
});

// ---------------------------------------------------------------------------------------------

/** helm is provisioned by the global setup (deploy/helm/install-helm.sh), so this never skips. */
const helm = process.env['GPU_DRA_HELM'] ?? 'helm';

describe('Helm chart deploy/helm/gpu-dra', () => {
  const chart = path.join(DEPLOY, 'helm/gpu-dra');
  const template = (...set: string[]): K8sObject[] =>
    parseYaml(
      execFileSync(
        helm,
        [
          'template',
          'gpu-dra',
          chart,
          '--namespace',
          NAMESPACE,
          '--kube-version',
          '1.34.0',
          ...set.flatMap((s) => ['--set', s]),
        ],
        {
          encoding: 'utf8',
        },
      ),
      'helm template',
    );
  const byKey = (objs: K8sObject[]): Record<string, K8sObject> =>
    Object.fromEntries(objs.map((o) => [`${o.kind}/${o.metadata.name}`, o]));

  it('lints', () => {
    execFileSync(helm, ['lint', chart, '--kube-version', '1.34.0'], { encoding: 'utf8' });
  });

  it('renders the plain manifests with default values (Namespace only when namespace.create)', () => {
    expect(byKey(template())).toEqual(byKey(all.filter((o) => o.kind !== 'Namespace')));
    expect(byKey(template('namespace.create=true'))).toEqual(byKey(all));
  });

  it('names the extended resource after the driver, or as told, or not at all', () => {
    const gpuClass = (...set: string[]): string | undefined => {
      const c = template(...set).find((o) => o.kind === 'DeviceClass' && o.metadata.name.startsWith('gpu.'));
      if (c === undefined) throw new Error('no gpu.* DeviceClass rendered');
      return (c as unknown as DeviceClass).spec?.extendedResourceName;
    };
    expect(gpuClass()).toBe('gpu.dra.dev/gpu');
    expect(gpuClass('driverName=gpu.nvidia.com')).toBe('nvidia.com/gpu');
    expect(gpuClass('driverName=gpu.example.com')).toBe('gpu.example.com/gpu');
    expect(gpuClass('deviceClasses.extendedResource.name=nvidia.com/gpu')).toBe('nvidia.com/gpu');
    expect(gpuClass('deviceClasses.extendedResource.enabled=false')).toBeUndefined();
    // Only whole GPUs: a MIG device is not what a device-plugin pod asking for a GPU expects.
    for (const o of template('driverName=gpu.nvidia.com').filter((x) => x.kind === 'DeviceClass'))
      if (o.metadata.name.startsWith('mig.')) expect(o['spec']).not.toHaveProperty('extendedResourceName');
  });

  it('follows the values: driver name, image, dirs, node selector', () => {
    const out = byKey(
      template(
        'driverName=gpu.nvidia.com',
        'image.repository=registry.example.com/gpu-dra',
        'image.tag=1.2.3',
        'nvidiaDriverRoot=/run/nvidia/driver',
        'kubeletPluginsDir=/var/lib/k0s/kubelet/plugins',
        'nodeSelector.gpu=yes',
        'updateStrategy.rollingUpdate.maxSurge=0',
        'updateStrategy.rollingUpdate.maxUnavailable=1',
      ),
    );
    const classes = Object.values(out).filter((o) => o.kind === 'DeviceClass');
    expect(classes.map((c) => ({ name: c.metadata.name, spec: c['spec'] }))).toEqual(
      defaultDeviceClasses('gpu.nvidia.com').map((c) => ({ name: c.metadata.name, spec: c.spec })),
    );
    const ds = out['DaemonSet/gpu-dra-kubelet-plugin'] as unknown as {
      spec: { updateStrategy: unknown; template: { spec: PodSpec } };
    };
    // Kubelets before 1.33 cannot run two: the old pod stops first.
    expect(ds.spec.updateStrategy).toEqual({
      type: 'RollingUpdate',
      rollingUpdate: { maxSurge: 0, maxUnavailable: 1 },
    });
    const pod = ds.spec.template.spec;
    const ctr = pod.containers[0] as Container;
    expect(ctr.image).toBe('registry.example.com/gpu-dra:1.2.3');
    expect(ctr.env.find((e) => e.name === 'DRIVER_NAME')?.value).toBe('gpu.nvidia.com');
    expect(ctr.env.find((e) => e.name === 'KUBELET_PLUGINS_DIR')?.value).toBe('/var/lib/k0s/kubelet/plugins');
    expect(pod.volumes.find((v) => v.name === 'driver-root')?.hostPath?.path).toBe('/run/nvidia/driver');
    expect(pod.volumes.find((v) => v.name === 'plugins')?.hostPath?.path).toBe(
      '/var/lib/k0s/kubelet/plugins',
    );
    expect(pod.nodeSelector).toEqual({ 'nvidia.com/gpu.present': 'true', gpu: 'yes' });
    expect(JSON.stringify(out['ValidatingAdmissionPolicy/gpu-dra-resourceslices'])).toContain(
      "variables.objectDriver == 'gpu.nvidia.com'",
    );
    // The opaque-config policy checks configs addressed to the chart's driver name.
    expect(JSON.stringify(out['ValidatingAdmissionPolicy/gpu-dra-opaque-configs'])).toContain(
      "c.?opaque.?driver.orValue('') == 'gpu.nvidia.com'",
    );
  });
});

describe('Dockerfile', () => {
  const text = fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');
  const ignore = fs.readFileSync(path.join(ROOT, '.dockerignore'), 'utf8');

  it('is multi-stage on the node 20 slim base, installs production deps only, runs the CLI', () => {
    expect(text).toMatch(/^ARG NODE_IMAGE=node:20-bookworm-slim$/m);
    expect(text.match(/^FROM /gm)?.length).toBe(3);
    expect(text).toMatch(/npm ci --omit=dev/);
    expect(text).toMatch(/^COPY proto \.\/proto$/m);
    // node, its flags (a small young generation, see the comment there), then the CLI.
    expect(text).toMatch(/^ENTRYPOINT \["node", "--max-semi-space-size=1", "\/app\/dist\/gpu-dra\.mjs"\]$/m);
    expect(text).toMatch(/^CMD \["driver"\]$/m);
    expect(text).toMatch(/^USER 0:0$/m);
    expect(text).toMatch(/Root on purpose/);
  });

  it('sends only what the build needs', () => {
    for (const p of ['!package.json', '!package-lock.json', '!src/**', '!proto/**', '!tsconfig.build.json'])
      expect(ignore).toContain(p);
    expect(ignore.split('\n')).toContain('**');
  });
});
