//go:build k8s136

// Kubernetes 1.36: the DRA manager's node getter and the plugin manager's Run take a context.
// The rest of the 1.34-1.36 differences are in adapter_pre137.go.

package main

import (
	"context"

	v1 "k8s.io/api/core/v1"
	"k8s.io/kubernetes/pkg/kubelet/cm/dra"
	"k8s.io/kubernetes/pkg/kubelet/pluginmanager"
)

func startDRAManager(ctx context.Context, mgr *dra.Manager, activePods dra.ActivePodsFunc, getNode func(context.Context) (*v1.Node, error), sources *harnessSources) error {
	return mgr.Start(ctx, activePods, getNode, sources)
}

func runPluginManager(ctx context.Context, pm pluginmanager.PluginManager, sources *harnessSources, stopCh <-chan struct{}) {
	pm.Run(ctx, sources, stopCh)
}
