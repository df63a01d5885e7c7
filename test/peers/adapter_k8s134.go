//go:build k8s134

// Adapters for the kubelet APIs of Kubernetes 1.34, where the plugin
// handler, the plugin manager and the node getter take no context and the
// DRA manager has no Stop method.

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
	return mgr.Start(ctx, activePods, func() (*v1.Node, error) { return getNode(ctx) }, sources)
}

func stopDRAManager(*dra.Manager) {}

func runPluginManager(_ context.Context, pm pluginmanager.PluginManager, sources *harnessSources, stopCh <-chan struct{}) {
	pm.Run(sources, stopCh)
}

type observingHandler struct {
	next   plugincache.PluginHandler
	events *eventSink
}

func newObservingHandler(next plugincache.PluginHandler, events *eventSink) plugincache.PluginHandler {
	return &observingHandler{next: next, events: events}
}

func (o *observingHandler) ValidatePlugin(name, endpoint string, versions []string) error {
	err := o.next.ValidatePlugin(name, endpoint, versions)
	if err != nil {
		o.events.emit("registerFailed", map[string]any{"driver": name, "endpoint": endpoint, "versions": versions, "error": err.Error()})
	}
	return err
}

func (o *observingHandler) RegisterPlugin(name, endpoint string, versions []string, timeout *time.Duration) error {
	err := o.next.RegisterPlugin(name, endpoint, versions, timeout)
	if err != nil {
		o.events.emit("registerFailed", map[string]any{"driver": name, "endpoint": endpoint, "versions": versions, "error": err.Error()})
	} else {
		o.events.emit("registered", map[string]any{"driver": name, "endpoint": endpoint, "versions": versions})
	}
	return err
}

func (o *observingHandler) DeRegisterPlugin(name, endpoint string) {
	o.next.DeRegisterPlugin(name, endpoint)
	o.events.emit("deregistered", map[string]any{"driver": name, "endpoint": endpoint})
}
