package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/spf13/pflag"
	"tags.cncf.io/container-device-interface/pkg/cdi"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/component-base/version"
	"k8s.io/klog/v2"
	pluginwatcherapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
	"k8s.io/kubernetes/pkg/kubelet/cm/dra"
	"k8s.io/kubernetes/pkg/kubelet/pluginmanager"
)

// kubeletOptions are the command line flags of the kubelet-dra harness.
type kubeletOptions struct {
	kubeconfig         string
	nodeName           string
	rootDir            string
	cdiDir             string
	eventsFile         string
	featureGates       string
	workers            int
	maxPrepareTries    int
	retryBase          time.Duration
	retryMax           time.Duration
	heartbeat          time.Duration
	wipeWaitTimeout    time.Duration
	nodeAllocatable    map[string]string
	nodeLabels         map[string]string
	deletePodsOnUnprep bool
}

// podState is what the harness remembers about one pod (keyed by UID).
type podState struct {
	pod *v1.Pod // latest object seen
	// gone is set once the informer reported the deletion.
	gone bool
	// active pods are handed to the DRA manager as active pods.
	active        bool
	prepareTries  int
	prepared      bool
	running       bool
	unprepared    bool
	deleteIssued  bool
	preparedEvent bool
}

type kubeletHarness struct {
	opts     kubeletOptions
	client   kubernetes.Interface
	mgr      *dra.Manager
	cdiCache *cdi.Cache
	events   *eventSink
	queue    workqueue.TypedRateLimitingInterface[types.UID]

	mu   sync.Mutex
	pods map[types.UID]*podState

	synced bool
}

func runKubeletDRA(args []string) int {
	opts := kubeletOptions{}
	fs := pflag.NewFlagSet("kubelet-dra", pflag.ContinueOnError)
	fs.StringVar(&opts.kubeconfig, "kubeconfig", "", "kubeconfig with the node's credentials (required)")
	fs.StringVar(&opts.nodeName, "node-name", "", "name of the Node object to create and serve (required)")
	fs.StringVar(&opts.rootDir, "root-dir", "", "kubelet root dir; plugins_registry/ and state/ live below it (required)")
	fs.StringVar(&opts.cdiDir, "cdi-dir", "", "the only directory the CDI cache reads specs from (required)")
	fs.StringVar(&opts.eventsFile, "events", "", "also append the JSON event lines to this file")
	fs.StringVar(&opts.featureGates, "feature-gates", "", "kubelet feature gates, e.g. ResourceHealthStatus=true")
	fs.IntVar(&opts.workers, "workers", 4, "number of pods handled concurrently")
	fs.IntVar(&opts.maxPrepareTries, "max-prepare-attempts", 0, "give up preparing a pod after this many failures (0: retry forever)")
	fs.DurationVar(&opts.retryBase, "retry-base", 500*time.Millisecond, "first retry delay after a failed prepare/unprepare/start")
	fs.DurationVar(&opts.retryMax, "retry-max", 10*time.Second, "longest retry delay")
	fs.DurationVar(&opts.heartbeat, "heartbeat", 20*time.Second, "how often the Ready condition is refreshed")
	fs.DurationVar(&opts.wipeWaitTimeout, "wipe-wait-timeout", 30*time.Second, "how long to wait for the startup ResourceSlice wipe before reporting ready anyway")
	fs.StringToStringVar(&opts.nodeAllocatable, "node-allocatable", map[string]string{"cpu": "32", "memory": "256Gi", "pods": "110"}, "node capacity and allocatable")
	fs.StringToStringVar(&opts.nodeLabels, "node-labels", nil, "extra node labels")
	fs.BoolVar(&opts.deletePodsOnUnprep, "delete-terminating-pods", true, "delete pods with a deletionTimestamp (grace period 0) once unprepared, as a kubelet does")
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	fs.AddGoFlagSet(klogFlags)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	for name, val := range map[string]string{"--kubeconfig": opts.kubeconfig, "--node-name": opts.nodeName, "--root-dir": opts.rootDir, "--cdi-dir": opts.cdiDir} {
		if val == "" {
			fmt.Fprintf(os.Stderr, "kubelet-dra: %s is required\n", name)
			return 2
		}
	}
	if opts.featureGates != "" {
		if err := utilfeature.DefaultMutableFeatureGate.Set(opts.featureGates); err != nil {
			fmt.Fprintf(os.Stderr, "kubelet-dra: --feature-gates: %v\n", err)
			return 2
		}
	}

	events, closeEvents, err := newEventSink(opts.eventsFile)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubelet-dra: %v\n", err)
		return 1
	}
	defer closeEvents()

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	logger := klog.Background().WithName("kubelet-dra")
	ctx = klog.NewContext(ctx, logger)

	if err := runHarness(ctx, opts, events); err != nil {
		logger.Error(err, "kubelet-dra failed")
		events.emit("fatal", map[string]any{"error": err.Error()})
		return 1
	}
	events.emit("stopped", nil)
	return 0
}

func runHarness(ctx context.Context, opts kubeletOptions, events *eventSink) error {
	logger := klog.FromContext(ctx)

	registryDir := filepath.Join(opts.rootDir, "plugins_registry")
	stateDir := filepath.Join(opts.rootDir, "state")
	for _, dir := range []string{registryDir, stateDir, opts.cdiDir} {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return err
		}
	}

	restConfig, err := clientcmd.BuildConfigFromFlags("", opts.kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	restConfig.QPS = 50
	restConfig.Burst = 100
	restConfig.UserAgent = "kubelet-dra/" + opts.nodeName
	// Observe the ResourceSlice wipes that the kubelet's DRA plugin manager
	// performs, so that tests know when it is safe to publish slices.
	wiped := make(chan struct{})
	var wipedOnce sync.Once
	restConfig.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return &wipeObserver{next: rt, events: events, onAllDrivers: func() { wipedOnce.Do(func() { close(wiped) }) }}
	})
	client, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return err
	}

	h := &kubeletHarness{
		opts:   opts,
		client: client,
		events: events,
		pods:   map[types.UID]*podState{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[types.UID](opts.retryBase, opts.retryMax),
			workqueue.TypedRateLimitingQueueConfig[types.UID]{Name: "kubelet-dra-pods"},
		),
	}
	defer h.queue.ShutDown()

	h.cdiCache, err = cdi.NewCache(cdi.WithSpecDirs(opts.cdiDir), cdi.WithAutoRefresh(false))
	if err != nil {
		return fmt.Errorf("create CDI cache: %w", err)
	}

	if err := h.registerNode(ctx); err != nil {
		return err
	}
	events.emit("nodeRegistered", map[string]any{"node": opts.nodeName})

	h.mgr, err = dra.NewManager(logger, client, stateDir)
	if err != nil {
		return fmt.Errorf("create DRA manager: %w", err)
	}
	sources := &harnessSources{h: h}
	getNode := func(ctx context.Context) (*v1.Node, error) {
		return client.CoreV1().Nodes().Get(ctx, opts.nodeName, metav1.GetOptions{})
	}
	if err := startDRAManager(ctx, h.mgr, h.activePods, getNode, sources); err != nil {
		return fmt.Errorf("start DRA manager: %w", err)
	}
	defer stopDRAManager(h.mgr)
	if healthEnabled() {
		go h.healthLoop(ctx)
	}

	pm := pluginmanager.NewPluginManager(registryDir, &klogRecorder{logger: logger.WithName("plugin-events")})
	pm.AddHandler(pluginwatcherapi.DRAPlugin, newObservingHandler(h.mgr.GetWatcherHandler(), events))
	stopCh := make(chan struct{})
	defer close(stopCh)
	go runPluginManager(ctx, pm, sources, stopCh)

	// Pods bound to this node.
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", opts.nodeName).String()
	}))
	podInformer := factory.Core().V1().Pods().Informer()
	if _, err := podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { h.observe(obj, false) },
		UpdateFunc: func(_, obj any) { h.observe(obj, false) },
		DeleteFunc: func(obj any) { h.observe(obj, true) },
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), podInformer.HasSynced) {
		return errors.New("pod informer did not sync")
	}
	h.mu.Lock()
	h.synced = true
	h.mu.Unlock()

	for i := 0; i < opts.workers; i++ {
		go h.worker(ctx)
	}
	go h.heartbeatLoop(ctx)

	wipeObserved := true
	select {
	case <-wiped:
	case <-time.After(opts.wipeWaitTimeout):
		wipeObserved = false
		logger.Info("Startup ResourceSlice wipe not observed in time, reporting ready anyway")
	case <-ctx.Done():
		return nil
	}
	events.emit("ready", map[string]any{
		"node":           opts.nodeName,
		"registryDir":    registryDir,
		"stateDir":       stateDir,
		"cdiDir":         opts.cdiDir,
		"slicesWiped":    wipeObserved,
		"kubeletVersion": kubeletVersion(),
	})

	<-ctx.Done()
	logger.Info("Shutting down")
	return nil
}

// registerNode creates the Node object (or refreshes an existing one) with a
// Ready condition and the configured capacity.
func (h *kubeletHarness) registerNode(ctx context.Context) error {
	resources := v1.ResourceList{}
	for name, val := range h.opts.nodeAllocatable {
		q, err := resource.ParseQuantity(val)
		if err != nil {
			return fmt.Errorf("--node-allocatable %s=%s: %w", name, val, err)
		}
		resources[v1.ResourceName(name)] = q
	}
	labels := map[string]string{
		"kubernetes.io/hostname": h.opts.nodeName,
		"kubernetes.io/os":       "linux",
		"kubernetes.io/arch":     "amd64",
	}
	for k, v := range h.opts.nodeLabels {
		labels[k] = v
	}

	nodes := h.client.CoreV1().Nodes()
	return retry.OnError(retry.DefaultBackoff, func(err error) bool { return !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) }, func() error {
		node, err := nodes.Get(ctx, h.opts.nodeName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			node = &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: h.opts.nodeName, Labels: labels}}
			node, err = nodes.Create(ctx, node, metav1.CreateOptions{})
		}
		if err != nil {
			return err
		}
		node.Status.Capacity = resources.DeepCopy()
		node.Status.Allocatable = resources.DeepCopy()
		node.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "127.0.0.1"}, {Type: v1.NodeHostName, Address: h.opts.nodeName}}
		node.Status.NodeInfo.KubeletVersion = kubeletVersion()
		node.Status.NodeInfo.OperatingSystem = "linux"
		node.Status.NodeInfo.Architecture = "amd64"
		node.Status.NodeInfo.ContainerRuntimeVersion = "kubelet-dra://harness"
		setReady(node)
		_, err = nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{})
		return err
	})
}

func setReady(node *v1.Node) {
	now := metav1.Now()
	ready := v1.NodeCondition{
		Type:               v1.NodeReady,
		Status:             v1.ConditionTrue,
		Reason:             "KubeletReady",
		Message:            "kubelet-dra harness is posting ready status",
		LastHeartbeatTime:  now,
		LastTransitionTime: now,
	}
	for i := range node.Status.Conditions {
		if node.Status.Conditions[i].Type == v1.NodeReady {
			if node.Status.Conditions[i].Status == v1.ConditionTrue {
				ready.LastTransitionTime = node.Status.Conditions[i].LastTransitionTime
			}
			node.Status.Conditions[i] = ready
			return
		}
	}
	node.Status.Conditions = append(node.Status.Conditions, ready)
}

func (h *kubeletHarness) heartbeatLoop(ctx context.Context) {
	if h.opts.heartbeat <= 0 {
		return
	}
	ticker := time.NewTicker(h.opts.heartbeat)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			node, err := h.client.CoreV1().Nodes().Get(ctx, h.opts.nodeName, metav1.GetOptions{})
			if err != nil {
				return err
			}
			setReady(node)
			_, err = h.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
			return err
		})
		if err != nil && ctx.Err() == nil {
			klog.FromContext(ctx).Error(err, "Node heartbeat failed")
		}
	}
}

// observe records the latest state of a pod and queues it.
func (h *kubeletHarness) observe(obj any, deleted bool) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	pod, ok := obj.(*v1.Pod)
	if !ok {
		return
	}
	h.mu.Lock()
	st := h.pods[pod.UID]
	if st == nil {
		st = &podState{}
		h.pods[pod.UID] = st
	}
	st.pod = pod
	if deleted {
		st.gone = true
	}
	h.mu.Unlock()
	h.queue.Add(pod.UID)
}

// activePods is the DRA manager's view of the pods on this node: every pod
// that has been admitted and not yet unprepared.
func (h *kubeletHarness) activePods() []*v1.Pod {
	h.mu.Lock()
	defer h.mu.Unlock()
	var pods []*v1.Pod
	for _, st := range h.pods {
		if st.active {
			pods = append(pods, st.pod)
		}
	}
	return pods
}

func (h *kubeletHarness) worker(ctx context.Context) {
	for {
		uid, shutdown := h.queue.Get()
		if shutdown {
			return
		}
		err := h.sync(ctx, uid)
		switch {
		case err == nil:
			h.queue.Forget(uid)
		case errors.Is(err, errGiveUp):
			h.queue.Forget(uid)
		default:
			h.queue.AddRateLimited(uid)
		}
		h.queue.Done(uid)
	}
}

var errGiveUp = errors.New("giving up")

func podKey(pod *v1.Pod) string { return pod.Namespace + "/" + pod.Name }

func isTerminal(pod *v1.Pod) bool {
	return pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed
}

func (h *kubeletHarness) sync(ctx context.Context, uid types.UID) error {
	logger := klog.FromContext(ctx)
	h.mu.Lock()
	st := h.pods[uid]
	if st == nil {
		h.mu.Unlock()
		return nil
	}
	pod := st.pod
	gone := st.gone
	h.mu.Unlock()

	if gone || pod.DeletionTimestamp != nil || isTerminal(pod) {
		return h.terminate(ctx, st, pod, gone)
	}

	h.mu.Lock()
	if st.running {
		h.mu.Unlock()
		return nil
	}
	if h.opts.maxPrepareTries > 0 && st.prepareTries >= h.opts.maxPrepareTries {
		h.mu.Unlock()
		return nil
	}
	st.active = true
	h.mu.Unlock()

	if !st.prepared {
		if err := h.mgr.PrepareResources(ctx, pod); err != nil {
			h.mu.Lock()
			st.prepareTries++
			tries := st.prepareTries
			h.mu.Unlock()
			logger.Info("PrepareResources failed", "pod", klog.KObj(pod), "attempt", tries, "err", err)
			h.events.emit("prepareFailed", map[string]any{"pod": podKey(pod), "uid": string(pod.UID), "attempt": tries, "error": err.Error()})
			if h.opts.maxPrepareTries > 0 && tries >= h.opts.maxPrepareTries {
				h.events.emit("prepareGaveUp", map[string]any{"pod": podKey(pod), "uid": string(pod.UID), "attempts": tries})
				return errGiveUp
			}
			return err
		}
		h.mu.Lock()
		st.prepared = true
		h.mu.Unlock()
	}

	// "Create the containers": resolve the CDI devices of each container
	// and inject them into a minimal OCI runtime spec.
	containers, startErr := h.buildContainers(pod)
	if !st.preparedEvent {
		st.preparedEvent = true
		h.events.emit("prepared", map[string]any{"pod": podKey(pod), "uid": string(pod.UID), "node": h.opts.nodeName, "containers": containers})
	}
	if startErr != nil {
		h.events.emit("startFailed", map[string]any{"pod": podKey(pod), "uid": string(pod.UID), "error": startErr.Error()})
		return startErr
	}

	if err := h.setRunning(ctx, pod); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("update pod status: %w", err)
	}
	h.mu.Lock()
	st.running = true
	h.mu.Unlock()
	h.events.emit("running", map[string]any{"pod": podKey(pod), "uid": string(pod.UID)})
	return nil
}

type containerResult struct {
	Name       string      `json:"name"`
	Init       bool        `json:"init,omitempty"`
	CDIDevices []string    `json:"cdiDevices"`
	OCISpec    *specs.Spec `json:"ociSpec,omitempty"`
	CDIError   string      `json:"cdiError,omitempty"`
}

func (h *kubeletHarness) buildContainers(pod *v1.Pod) ([]containerResult, error) {
	// Manual-refresh cache: rescan the spec dir, drivers write specs
	// during NodePrepareResources.
	refreshErr := h.cdiCache.Refresh()
	var results []containerResult
	var errs []error
	add := func(c *v1.Container, init bool) {
		res := containerResult{Name: c.Name, Init: init, CDIDevices: []string{}}
		info, err := h.mgr.GetResources(pod, c)
		if err != nil {
			res.CDIError = err.Error()
			errs = append(errs, fmt.Errorf("container %s: %w", c.Name, err))
			results = append(results, res)
			return
		}
		for _, d := range info.CDIDevices {
			res.CDIDevices = append(res.CDIDevices, d.Name)
		}
		spec := minimalOCISpec(pod, c)
		if len(res.CDIDevices) > 0 {
			if _, err := h.cdiCache.InjectDevices(spec, res.CDIDevices...); err != nil {
				if refreshErr != nil {
					err = fmt.Errorf("%w (CDI spec errors: %v)", err, refreshErr)
				}
				res.CDIError = err.Error()
				errs = append(errs, fmt.Errorf("container %s: %w", c.Name, err))
				results = append(results, res)
				return
			}
		}
		res.OCISpec = spec
		results = append(results, res)
	}
	for i := range pod.Spec.InitContainers {
		add(&pod.Spec.InitContainers[i], true)
	}
	for i := range pod.Spec.Containers {
		add(&pod.Spec.Containers[i], false)
	}
	return results, errors.Join(errs...)
}

// minimalOCISpec is a small runtime spec of the kind a container runtime
// would build before applying CDI edits.
func minimalOCISpec(pod *v1.Pod, c *v1.Container) *specs.Spec {
	args := append(append([]string{}, c.Command...), c.Args...)
	if len(args) == 0 {
		args = []string{"/bin/sh"}
	}
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=" + pod.Name}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env = append(env, e.Name+"="+e.Value)
		}
	}
	return &specs.Spec{
		Version:  specs.Version,
		Hostname: pod.Name,
		Process:  &specs.Process{Args: args, Env: env, Cwd: "/"},
		Root:     &specs.Root{Path: "rootfs"},
		Mounts:   []specs.Mount{{Destination: "/proc", Type: "proc", Source: "proc"}},
		Annotations: map[string]string{
			"io.kubernetes.pod.namespace":  pod.Namespace,
			"io.kubernetes.pod.name":       pod.Name,
			"io.kubernetes.pod.uid":        string(pod.UID),
			"io.kubernetes.container.name": c.Name,
		},
		Linux: &specs.Linux{},
	}
}

func (h *kubeletHarness) setRunning(ctx context.Context, pod *v1.Pod) error {
	var written *v1.Pod
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		current, err := h.client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if current.UID != pod.UID {
			return apierrors.NewNotFound(v1.Resource("pods"), pod.Name)
		}
		now := metav1.Now()
		status := current.Status.DeepCopy()
		status.Phase = v1.PodRunning
		status.HostIP = "127.0.0.1"
		status.HostIPs = []v1.HostIP{{IP: "127.0.0.1"}}
		if status.StartTime == nil {
			status.StartTime = &now
		}
		for _, t := range []v1.PodConditionType{v1.PodReadyToStartContainers, v1.PodInitialized, v1.ContainersReady, v1.PodReady} {
			setPodCondition(status, v1.PodCondition{Type: t, Status: v1.ConditionTrue, LastTransitionTime: now})
		}
		status.InitContainerStatuses = nil
		for _, c := range current.Spec.InitContainers {
			status.InitContainerStatuses = append(status.InitContainerStatuses, v1.ContainerStatus{
				Name: c.Name, Image: c.Image, ImageID: c.Image, ContainerID: "harness://" + string(pod.UID) + "/" + c.Name,
				State: v1.ContainerState{Terminated: &v1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", StartedAt: now, FinishedAt: now}},
				Ready: true,
			})
		}
		status.ContainerStatuses = nil
		started := true
		for _, c := range current.Spec.Containers {
			status.ContainerStatuses = append(status.ContainerStatuses, v1.ContainerStatus{
				Name: c.Name, Image: c.Image, ImageID: c.Image, ContainerID: "harness://" + string(pod.UID) + "/" + c.Name,
				State: v1.ContainerState{Running: &v1.ContainerStateRunning{StartedAt: now}},
				Ready: true, Started: &started,
			})
		}
		// generateAPIPodStatus adds the devices' health to every status it builds.
		if healthEnabled() {
			if err := h.updateAllocatedResourcesStatus(klog.FromContext(ctx), current, status); err != nil {
				return err
			}
		}
		current.Status = *status
		written, err = h.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, current, metav1.UpdateOptions{})
		return err
	})
	if err == nil && healthEnabled() {
		h.emitHealth(written)
	}
	return err
}

func setPodCondition(status *v1.PodStatus, cond v1.PodCondition) {
	for i := range status.Conditions {
		if status.Conditions[i].Type == cond.Type {
			if status.Conditions[i].Status == cond.Status {
				cond.LastTransitionTime = status.Conditions[i].LastTransitionTime
			}
			status.Conditions[i] = cond
			return
		}
	}
	status.Conditions = append(status.Conditions, cond)
}

// terminate unprepares a pod that is being deleted, is gone or has
// finished, and then deletes it (grace period 0) when it has a deletion
// timestamp, as a kubelet does once the containers have stopped.
func (h *kubeletHarness) terminate(ctx context.Context, st *podState, pod *v1.Pod, gone bool) error {
	logger := klog.FromContext(ctx)
	h.mu.Lock()
	st.running = false
	unprepared := st.unprepared
	h.mu.Unlock()

	if !unprepared {
		if err := h.mgr.UnprepareResources(ctx, pod); err != nil {
			logger.Info("UnprepareResources failed", "pod", klog.KObj(pod), "err", err)
			h.events.emit("unprepareFailed", map[string]any{"pod": podKey(pod), "uid": string(pod.UID), "error": err.Error()})
			return err
		}
		h.mu.Lock()
		st.unprepared = true
		st.active = false
		h.mu.Unlock()
		h.events.emit("unprepared", map[string]any{"pod": podKey(pod), "uid": string(pod.UID)})
	}

	if gone {
		h.mu.Lock()
		delete(h.pods, pod.UID)
		h.mu.Unlock()
		h.events.emit("podGone", map[string]any{"pod": podKey(pod), "uid": string(pod.UID)})
		return nil
	}
	if pod.DeletionTimestamp == nil || !h.opts.deletePodsOnUnprep || st.deleteIssued {
		return nil
	}
	zero := int64(0)
	uid := pod.UID
	err := h.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero,
		Preconditions:      &metav1.Preconditions{UID: &uid},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete pod: %w", err)
	}
	h.mu.Lock()
	st.deleteIssued = true
	h.mu.Unlock()
	h.events.emit("podDeleted", map[string]any{"pod": podKey(pod), "uid": string(pod.UID)})
	return nil
}

// harnessSources reports all pod sources ready once the pod informer synced.
// The DRA manager's reconcile loop only runs after that.
type harnessSources struct{ h *kubeletHarness }

func (s *harnessSources) AddSource(string) {}
func (s *harnessSources) AllReady() bool {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	return s.h.synced
}

// wipeObserver reports DeleteCollection calls on ResourceSlices.
type wipeObserver struct {
	next         http.RoundTripper
	events       *eventSink
	onAllDrivers func()
}

func (w *wipeObserver) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := w.next.RoundTrip(req)
	if req.Method == http.MethodDelete && strings.HasSuffix(req.URL.Path, "/resourceslices") {
		selector := req.URL.Query().Get("fieldSelector")
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		fields := map[string]any{"fieldSelector": selector, "status": code}
		if err != nil {
			fields["error"] = err.Error()
		}
		w.events.emit("slicesWiped", fields)
		if err == nil && code >= 200 && code < 300 && !strings.Contains(selector, "spec.driver") {
			w.onAllDrivers()
		}
	}
	return resp, err
}

// klogRecorder is a record.EventRecorder that only logs.
type klogRecorder struct{ logger klog.Logger }

func (r *klogRecorder) Event(obj runtime.Object, eventtype, reason, message string) {
	r.logger.Info("Event", "type", eventtype, "reason", reason, "message", message)
}

func (r *klogRecorder) Eventf(obj runtime.Object, eventtype, reason, messageFmt string, args ...any) {
	r.Event(obj, eventtype, reason, fmt.Sprintf(messageFmt, args...))
}

func (r *klogRecorder) AnnotatedEventf(obj runtime.Object, _ map[string]string, eventtype, reason, messageFmt string, args ...any) {
	r.Event(obj, eventtype, reason, fmt.Sprintf(messageFmt, args...))
}

func init() {
	// Errors from informers and such go to klog rather than panicking.
	utilruntime.ReallyCrash = false
}

func kubeletVersion() string { return version.Get().GitVersion }
