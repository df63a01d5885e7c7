//go:build !k8s134 && !k8s135 && !k8s136

// Adapters for the kubelet APIs of Kubernetes 1.37 and later, where the
// plugin handler, the plugin manager and the node getter take a context and
// the DRA manager has a Stop method. Older releases: adapter_pre137.go and
// adapter_k8s13<minor>.go, selected by build.sh's tags.

package main

import (
	"context"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/kubernetes/pkg/kubelet/cm/dra"
	"k8s.io/kubernetes/pkg/kubelet/pluginmanager"
	plugincache "k8s.io/kubernetes/pkg/kubelet/pluginmanager/cache"
)

func startDRAManager(ctx context.Context, mgr *dra.Manager, activePods dra.ActivePodsFunc, getNode func(context.Context) (*v1.Node, error), sources *harnessSources) error {
	return mgr.Start(ctx, activePods, getNode, sources)
}

func stopDRAManager(mgr *dra.Manager) { mgr.Stop() }

func runPluginManager(ctx context.Context, pm pluginmanager.PluginManager, sources *harnessSources, stopCh <-chan struct{}) {
	pm.Run(ctx, sources, stopCh)
}

// observingHandler forwards to the DRA manager's plugin handler and reports
// registrations as events.
type observingHandler struct {
	next   plugincache.PluginHandler
	events *eventSink
}

func newObservingHandler(next plugincache.PluginHandler, events *eventSink) plugincache.PluginHandler {
	return &observingHandler{next: next, events: events}
}

func (o *observingHandler) ValidatePlugin(ctx context.Context, name, endpoint string, versions []string) error {
	err := o.next.ValidatePlugin(ctx, name, endpoint, versions)
	if err != nil {
		o.events.emit("registerFailed", map[string]any{"driver": name, "endpoint": endpoint, "versions": versions, "error": err.Error()})
	}
	return err
}

func (o *observingHandler) RegisterPlugin(ctx context.Context, name, endpoint string, versions []string, timeout *time.Duration) error {
	err := o.next.RegisterPlugin(ctx, name, endpoint, versions, timeout)
	if err != nil {
		o.events.emit("registerFailed", map[string]any{"driver": name, "endpoint": endpoint, "versions": versions, "error": err.Error()})
	} else {
		o.events.emit("registered", map[string]any{"driver": name, "endpoint": endpoint, "versions": versions})
	}
	return err
}

func (o *observingHandler) DeRegisterPlugin(ctx context.Context, name, endpoint string) {
	o.next.DeRegisterPlugin(ctx, name, endpoint)
	o.events.emit("deregistered", map[string]any{"driver": name, "endpoint": endpoint})
}
