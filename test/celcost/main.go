// celcost prints, for each CEL selector expression read from stdin (a JSON array of strings),
// what the apiserver's DRA validation computes: the estimated worst-case cost, or the
// compile error. It is the ground truth for src/cel/cost.ts (test/unit/cel-cost-property.test.ts).
package main

import (
	"encoding/json"
	"os"

	dracel "k8s.io/dynamic-resource-allocation/cel"
	"k8s.io/apiserver/pkg/cel/environment"
)

type result struct {
	MaxCost uint64 `json:"maxCost,string"`
	Error   string `json:"error,omitempty"`
}

func main() {
	var expressions []string
	if err := json.NewDecoder(os.Stdin).Decode(&expressions); err != nil {
		os.Stderr.WriteString("celcost: stdin must be a JSON array of strings: " + err.Error() + "\n")
		os.Exit(2)
	}
	// As the 1.37 apiserver validates a new selector with its default gates (DRAConsumableCapacity beta on).
	compiler := dracel.GetCompiler(dracel.Features{EnableConsumableCapacity: true})
	envType := environment.NewExpressions
	out := make([]result, len(expressions))
	for i, expr := range expressions {
		r := compiler.CompileCELExpression(expr, dracel.Options{EnvType: &envType})
		if r.Error != nil {
			out[i] = result{Error: r.Error.Error()}
			continue
		}
		out[i] = result{MaxCost: r.MaxCost}
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(1)
	}
}
