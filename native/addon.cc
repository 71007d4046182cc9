// Entry point of sigil_native, the addon that owns BPF handles for the Sigil agent. It calls
// libbpf and moves bytes; every policy decision is made in TypeScript (src/kernel/native.ts wraps
// these exports).
#include <memory>

#include <napi.h>

#include "addon_state.h"
#include "bpf_object.h"
#include "functions.h"
#include "libbpf_log.h"
#include "link.h"
#include "ring_buffer_consumer.h"

namespace sigil {

Napi::Object InitAddon(Napi::Env env, Napi::Object exports)
{
	InstallLibbpfLogger();

	auto *state = new AddonState();
	env.SetInstanceData(state);
	// Stops consumer threads, destroys links and closes objects when the environment shuts
	// down, such as when a worker thread ends. The hook captures the registry, not the state,
	// so it stays valid whichever of the two Node frees first.
	std::shared_ptr<ResourceRegistry> registry = state->registry;
	env.AddCleanupHook([registry]() { registry->ReleaseAll(); });

	BpfObject::Init(env, exports);
	Link::Init(env, exports, *state);
	RingBufferConsumer::Init(env, exports);
	InitProbes(env, exports);
	InitMapOps(env, exports);
	InitSystem(env, exports);
	InitRingBufferFill(env, exports);
	InitFileCache(env, exports);
	return exports;
}

} // namespace sigil

namespace {

// NODE_API_MODULE needs an unqualified function name.
Napi::Object InitSigilNative(Napi::Env env, Napi::Object exports)
{
	return sigil::InitAddon(env, exports);
}

} // namespace

NODE_API_MODULE(sigil_native, InitSigilNative)
