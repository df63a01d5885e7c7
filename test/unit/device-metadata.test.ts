// Device metadata (KEP-5304): the document and paths (pure, laid out as the kubeletplugin helper
// of k8s.io/dynamic-resource-allocation v0.37 writes them), and the device state writing the
// files, mounting them through the claim's CDI spec, removing them and sweeping leftovers.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { CdiSpec } from '../../src/cdi/spec.js';
import { MemoryClaimGetter } from '../../src/driver/claims.js';
import {
  metadataContainerPath,
  metadataDocument,
  metadataFiles,
  metadataMounts,
} from '../../src/driver/deviceMetadata.js';
import type { DescribedDevice } from '../../src/driver/deviceStatus.js';
import { MetadataStore } from '../../src/driver/metadataStore.js';
import type { DeviceState } from '../../src/driver/state.js';
import { isGpuDraError } from '../../src/util/errors.js';
import { silentLogger } from '../../src/util/log.js';
import {
  createTestHost,
  testClaim,
  testDeviceState,
  TEST_DRIVER,
  TEST_NODE,
  type TestHost,
} from '../support/driverFixtures.js';

const UID = '7b2e0c1a-0000-4000-8000-00000000000a';
const CLAIM = { namespace: 'team', name: 'train', uid: UID };
const dev = (deviceName: string, requestNames: string[], shareId?: string): DescribedDevice => ({
  requestNames,
  poolName: TEST_NODE,
  deviceName,
  ...(shareId ? { shareId } : {}),
  attributes: { uuid: { string: `GPU-${deviceName}` }, type: { string: 'gpu' } },
});

/** The JSON stream's objects, as a streaming decoder reads them. */
function decodeStream(text: string): Record<string, unknown>[] {
  return text.split(/\n(?=\{)/).map((chunk) => JSON.parse(chunk) as Record<string, unknown>);
}

describe('metadata paths and document', () => {
  it('puts a claim by name under resourceclaims/, one from a template under its pod claim name', () => {
    expect(metadataContainerPath(TEST_DRIVER, CLAIM, 'gpu')).toBe(
      '/var/run/kubernetes.io/dra-device-attributes/resourceclaims/train/gpu/gpu.dra.dev-metadata.json',
    );
    expect(metadataContainerPath(TEST_DRIVER, { ...CLAIM, podClaimName: 'gpus' }, 'gpu')).toBe(
      '/var/run/kubernetes.io/dra-device-attributes/resourceclaimtemplates/gpus/gpu/gpu.dra.dev-metadata.json',
    );
  });

  it.each([
    ['a request name with a slash', CLAIM, '../gpu'],
    ['a claim name with ..', { ...CLAIM, name: '../../etc' }, 'gpu'],
    ['an upper-case pod claim name', { ...CLAIM, podClaimName: 'GPU' }, 'gpu'],
  ])('refuses %s, naming the claim', (_what, claim, request) => {
    let caught: unknown;
    try {
      metadataContainerPath(TEST_DRIVER, claim, request);
    } catch (err) {
      caught = err;
    }
    expect(isGpuDraError(caught, 'DEVICE_METADATA_FAILED')).toBe(true);
    expect((caught as { claimUid?: string }).claimUid).toBe(UID);
  });

  it('writes the object once per version, newest first, with the devices and their attributes', () => {
    const text = metadataDocument(TEST_DRIVER, { ...CLAIM, podClaimName: 'gpus' }, 'gpu', [
      dev('gpu-0', ['gpu']),
    ]);
    const objects = decodeStream(text);
    expect(objects.map((o) => o['apiVersion'])).toEqual([
      'metadata.resource.k8s.io/v1beta1',
      'metadata.resource.k8s.io/v1alpha1',
    ]);
    for (const o of objects) {
      expect(o).toEqual({
        kind: 'DeviceMetadata',
        apiVersion: o['apiVersion'],
        metadata: { name: 'train', namespace: 'team', uid: UID, generation: 1 },
        podClaimName: 'gpus',
        requests: [
          {
            name: 'gpu',
            devices: [
              {
                driver: TEST_DRIVER,
                pool: TEST_NODE,
                name: 'gpu-0',
                attributes: { type: { string: 'gpu' }, uuid: { string: 'GPU-gpu-0' } },
              },
            ],
          },
        ],
      });
    }
    expect(text.endsWith('}\n')).toBe(true);
  });

  it('one file per request; its mount on the first of its devices only', () => {
    const devices = [dev('gpu-10', ['a']), dev('gpu-2', ['a', 'b']), dev('gpu-3', ['b'])];
    const files = metadataFiles(TEST_DRIVER, CLAIM, devices);
    expect(files.map((f) => [f.request, f.relativePath])).toEqual([
      ['a', 'a/gpu.dra.dev-metadata.json'],
      ['b', 'b/gpu.dra.dev-metadata.json'],
    ]);
    // Natural order: gpu-2 before gpu-10, so gpu-2 carries both requests' files.
    const mounts = metadataMounts(files, devices, (f) => `/host/${f.relativePath}`);
    expect([...mounts.keys()]).toEqual(['gpu-2']);
    expect(mounts.get('gpu-2')).toEqual([
      {
        hostPath: '/host/a/gpu.dra.dev-metadata.json',
        containerPath: metadataContainerPath(TEST_DRIVER, CLAIM, 'a'),
        options: ['ro', 'nosuid', 'nodev', 'bind'],
      },
      {
        hostPath: '/host/b/gpu.dra.dev-metadata.json',
        containerPath: metadataContainerPath(TEST_DRIVER, CLAIM, 'b'),
        options: ['ro', 'nosuid', 'nodev', 'bind'],
      },
    ]);
    const docA = decodeStream(files[0]?.content ?? '')[0] as { requests: { devices: { name: string }[] }[] };
    expect(docA.requests[0]?.devices.map((d) => d.name)).toEqual(['gpu-2', 'gpu-10']);
  });
});

describe('device state with --device-metadata', () => {
  const log = silentLogger();
  let host: TestHost;
  let getter: MemoryClaimGetter;
  let store: MetadataStore;

  beforeEach(() => {
    host = createTestHost();
    getter = new MemoryClaimGetter();
    store = new MetadataStore(path.join(host.pluginsDir, TEST_DRIVER, 'dra-device-metadata'));
  });
  afterEach(() => {
    host.cleanup();
  });

  const state = (deviceMetadata = true): DeviceState =>
    testDeviceState(host, { claims: getter, metadata: store, deviceMetadata });
  const claimDir = (uid = UID): string => path.join(store.root, uid);
  const spec = (uid = UID): CdiSpec =>
    JSON.parse(
      fs.readFileSync(path.join(host.cdiRoot, `k8s.gpu.dra.dev-claim_${uid}.json`), 'utf8'),
    ) as CdiSpec;

  async function prepare(s: DeviceState, uid = UID, annotations?: Record<string, string>): Promise<void> {
    const claim = testClaim({
      uid,
      name: 'train',
      namespace: 'team',
      devices: ['gpu:gpu-0', 'mig:gpu-1-mig-1g10gb-19-0'],
    });
    getter.set({ ...claim, metadata: { ...claim.metadata, ...(annotations ? { annotations } : {}) } });
    await s.prepare({ uid, namespace: 'team', name: 'train' }, () => getter.get('team', 'train'), log);
  }

  it('writes a file per request and mounts it from the claim spec; unprepare removes both', async () => {
    const s = state();
    await s.recover();
    await prepare(s, UID, { 'resource.kubernetes.io/pod-claim-name': 'gpus' });
    const gpuFile = path.join(claimDir(), 'gpu', 'gpu.dra.dev-metadata.json');
    const [doc] = decodeStream(fs.readFileSync(gpuFile, 'utf8'));
    expect(doc).toMatchObject({
      podClaimName: 'gpus',
      requests: [
        {
          name: 'gpu',
          devices: [{ name: 'gpu-0', attributes: { productName: { string: 'NVIDIA H100 80GB HBM3' } } }],
        },
      ],
    });
    expect(fs.statSync(gpuFile).mode & 0o777).toBe(0o644);
    const migDoc = decodeStream(
      fs.readFileSync(path.join(claimDir(), 'mig', 'gpu.dra.dev-metadata.json'), 'utf8'),
    )[0];
    expect(migDoc).toMatchObject({
      requests: [{ name: 'mig', devices: [{ attributes: { profile: { string: '1g.10gb' } } }] }],
    });
    const byName = new Map(
      spec().devices.map((d) => [d.name.slice(UID.length + 1), d.containerEdits.mounts]),
    );
    expect(byName.get('gpu-0')).toEqual([
      {
        hostPath: gpuFile,
        containerPath:
          '/var/run/kubernetes.io/dra-device-attributes/resourceclaimtemplates/gpus/gpu/gpu.dra.dev-metadata.json',
        options: ['ro', 'nosuid', 'nodev', 'bind'],
      },
    ]);
    expect(byName.get('gpu-1-mig-1g10gb-19-0')?.[0]?.containerPath).toMatch(/\/gpus\/mig\//);
    // Spec-level edits (every device of the claim) carry no metadata mount.
    expect(JSON.stringify(spec().containerEdits)).not.toContain('dra-device-attributes');

    await s.unprepare({ uid: UID, namespace: 'team', name: 'train' }, log);
    expect(fs.existsSync(claimDir())).toBe(false);
  });

  it('off: no files, no mounts', async () => {
    const s = state(false);
    await s.recover();
    await prepare(s);
    expect(fs.existsSync(claimDir())).toBe(false);
    expect(JSON.stringify(spec())).not.toContain('dra-device-attributes');
  });

  it('a failed prepare leaves no files', async () => {
    const s = state();
    await s.recover();
    // The CDI root is a file: the spec write fails after the metadata files were written.
    fs.rmSync(host.cdiRoot, { recursive: true });
    fs.writeFileSync(host.cdiRoot, 'not a directory');
    await expect(prepare(s)).rejects.toMatchObject({ code: 'CDI_WRITE_FAILED' });
    expect(fs.existsSync(claimDir())).toBe(false);
  });

  it('start-up removes files no recorded claim owns, and restores those a prepared claim lost', async () => {
    const s = state();
    await s.recover();
    await prepare(s);
    const orphan = '7b2e0c1a-0000-4000-8000-0000000000ff';
    fs.mkdirSync(path.join(claimDir(orphan), 'gpu'), { recursive: true });
    fs.writeFileSync(path.join(claimDir(orphan), 'gpu', 'gpu.dra.dev-metadata.json'), '{}');
    fs.rmSync(path.join(claimDir(), 'gpu'), { recursive: true });

    const again = state();
    const report = await again.recover();
    expect(report.metadataRemoved).toEqual([orphan]);
    expect(report.restored).toEqual([UID]);
    expect(fs.existsSync(claimDir(orphan))).toBe(false);
    expect(fs.existsSync(path.join(claimDir(), 'gpu', 'gpu.dra.dev-metadata.json'))).toBe(true);
  });

  it('after a reboot the rebuilt spec mounts the files again, written again', async () => {
    const s = state();
    await s.recover();
    await prepare(s, UID, { 'resource.kubernetes.io/pod-claim-name': 'gpus' });
    fs.rmSync(claimDir(), { recursive: true });
    host.setBootId('99999999-2222-3333-4444-555555555555');
    const report = await state().recover();
    expect(report.rebuilt).toEqual([UID]);
    const gpu0 = spec().devices.find((d) => d.name.endsWith('-gpu-0'));
    expect(gpu0?.containerEdits.mounts?.[0]?.containerPath).toContain('/resourceclaimtemplates/gpus/gpu/');
    expect(fs.existsSync(path.join(claimDir(), 'gpu', 'gpu.dra.dev-metadata.json'))).toBe(true);
  });
});
