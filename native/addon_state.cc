#include "addon_state.h"

#include <vector>

#include <napi.h>

#include "errors.h"

namespace sigil {

void ResourceRegistry::ReleaseAll() noexcept
{
	// Copy first, because a release may run code that calls Remove.
	std::vector<Resource *> pending(resources_.begin(), resources_.end());
	for (Resource::Kind kind :
	     {Resource::Kind::kConsumer, Resource::Kind::kLink, Resource::Kind::kObject}) {
		for (Resource *resource : pending) {
			if (resource->ResourceKind() == kind)
				resource->ReleaseResource();
		}
	}
	resources_.clear();
}

AddonState &GetAddonState(Napi::Env env)
{
	AddonState *state = env.GetInstanceData<AddonState>();
	if (state == nullptr)
		ThrowError(env, "sigil_native is not initialized in this environment");
	return *state;
}

} // namespace sigil
