// Registration of the addon's free functions, grouped by source file.
#pragma once

#include <napi.h>

namespace sigil {

// probe.cc: probeProgramType, probeMapType, probeHelper.
void InitProbes(Napi::Env env, Napi::Object exports);

// map_ops.cc: mapUpdate, mapUpdateMany, mapDeleteMany, mapLookup, mapDelete, mapGetNextKey, mapCreate, numPossibleCpus.
void InitMapOps(Napi::Env env, Napi::Object exports);

// system.cc: closeFd, objGet, objPin, mount, and the `constants` object.
void InitSystem(Napi::Env env, Napi::Object exports);

// ring_buffer_fill.cc: ringBufferPositions.
void InitRingBufferFill(Napi::Env env, Napi::Object exports);

// file_cache.cc: trimFileCache.
void InitFileCache(Napi::Env env, Napi::Object exports);

} // namespace sigil
