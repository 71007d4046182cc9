#include "args.h"

#include <math.h>
#include <stdint.h>

#include <string>

#include <napi.h>

#include "errors.h"

namespace sigil {

namespace {

int64_t CheckInteger(Napi::Env env, Napi::Value value, const std::string &name, int64_t min,
		     int64_t max)
{
	if (!value.IsNumber())
		ThrowTypeError(env, name + " must be a number");
	double number = value.As<Napi::Number>().DoubleValue();
	if (!isfinite(number) || trunc(number) != number)
		ThrowTypeError(env, name + " must be an integer, got " + std::to_string(number));
	if (number < static_cast<double>(min) || number > static_cast<double>(max))
		ThrowRangeError(env, name + " must be from " + std::to_string(min) + " to " +
					     std::to_string(max) + ", got " +
					     std::to_string(number));
	return static_cast<int64_t>(number);
}

} // namespace

std::string ArgString(const Napi::CallbackInfo &info, size_t index, const char *name)
{
	if (!info[index].IsString())
		ThrowTypeError(info.Env(), std::string(name) + " must be a string");
	return info[index].As<Napi::String>().Utf8Value();
}

int64_t ArgInteger(const Napi::CallbackInfo &info, size_t index, const char *name, int64_t min,
		   int64_t max)
{
	return CheckInteger(info.Env(), info[index], name, min, max);
}

int ArgFd(const Napi::CallbackInfo &info, size_t index, const char *name)
{
	return static_cast<int>(ArgInteger(info, index, name, 0, INT32_MAX));
}

bool ArgBool(const Napi::CallbackInfo &info, size_t index, const char *name)
{
	if (!info[index].IsBoolean())
		ThrowTypeError(info.Env(), std::string(name) + " must be a boolean");
	return info[index].As<Napi::Boolean>().Value();
}

ByteView ArgBytes(const Napi::CallbackInfo &info, size_t index, const char *name)
{
	Napi::Value value = info[index];
	if (!value.IsTypedArray() ||
	    value.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
		ThrowTypeError(info.Env(), std::string(name) + " must be a Buffer or Uint8Array");
	Napi::Uint8Array array = value.As<Napi::Uint8Array>();
	return ByteView{array.Data(), array.ByteLength()};
}

Napi::Function ArgFunction(const Napi::CallbackInfo &info, size_t index, const char *name)
{
	if (!info[index].IsFunction())
		ThrowTypeError(info.Env(), std::string(name) + " must be a function");
	return info[index].As<Napi::Function>();
}

int64_t OptionInteger(Napi::Object options, const char *name, int64_t min, int64_t max,
		      int64_t fallback)
{
	Napi::Value value = options.Get(name);
	if (value.IsUndefined())
		return fallback;
	return CheckInteger(options.Env(), value, std::string("options.") + name, min, max);
}

} // namespace sigil
