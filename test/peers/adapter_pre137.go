//go:build k8s134 || k8s135 || k8s136

// Kubernetes 1.34 to 1.36: the plugin handler takes no context and the DRA manager has no Stop
// method. startDRAManager and runPluginManager are in adapter_k8s13<minor>.go.

package main

import (
	"time"

	"k8s.io/kubernetes/pkg/kubelet/cm/dra"
	plugincache "k8s.io/kubernetes/pkg/kubelet/pluginmanager/cache"
)

func stopDRAManager(*dra.Manager) {}

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
