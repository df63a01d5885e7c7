// Command gpu-dra-peers is a multi-call binary that runs the real Kubernetes
// components used by the gpu-dra end-to-end tests: an embedded etcd, the
// kube-apiserver, kube-scheduler and kube-controller-manager cobra commands,
// and "kubelet-dra", a one-node harness built from the kubelet's own DRA
// manager and plugin manager.
//
// The component is selected by the first argument. Only the selected
// component is constructed: the apiserver command installs a process-wide
// signal handler while it is being built, and building two of them in one
// process panics.
package main

import (
	"fmt"
	"os"
	_ "time/tzdata"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/component-base/version"

	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	schedulerapp "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

const usage = `usage: gpu-dra-peers <component> [flags]

components:
  etcd                embedded etcd server (--data-dir, --listen-client-url)
  apiserver           kube-apiserver (all kube-apiserver flags)
  scheduler           kube-scheduler (all kube-scheduler flags)
  controller-manager  kube-controller-manager (all kube-controller-manager flags)
  kubelet-dra         one-node kubelet harness around the kubelet DRA manager
  version             print the Kubernetes version this binary was built from
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	component, args := os.Args[1], os.Args[2:]
	switch component {
	case "etcd":
		os.Exit(runEtcd(args))
	case "apiserver", "kube-apiserver":
		cmd := apiserverapp.NewAPIServerCommand()
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "scheduler", "kube-scheduler":
		cmd := schedulerapp.NewSchedulerCommand()
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "controller-manager", "kube-controller-manager":
		cmd := kcmapp.NewControllerManagerCommand()
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "kubelet-dra":
		os.Exit(runKubeletDRA(args))
	case "version", "--version":
		fmt.Println(version.Get().GitVersion)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "unknown component %q\n\n%s", component, usage)
		os.Exit(2)
	}
}
