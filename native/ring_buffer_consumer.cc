#include "ring_buffer_consumer.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <system_error>

#include <bpf/libbpf.h>

#include <napi.h>

#include "args.h"
#include "errors.h"

namespace sigil {

namespace {

constexpr int64_t kDefaultMaxBatchBytes = 1 << 20;
constexpr int64_t kDefaultPollTimeoutMs = 100;
constexpr int64_t kDefaultMaxQueuedBatches = 64;
constexpr int64_t kDefaultMaxUnreleasedBatches = 0;

// Capacity reserved for a new batch; batches grow beyond it up to maxBatchBytes.
constexpr size_t kInitialBatchCapacity = 64 * 1024;

// Returned by OnRecord to make ring_buffer__consume stop early.
constexpr int kConsumeCancelled = -ECANCELED;

constexpr size_t kFrameHeaderBytes = 8;

size_t FrameBytes(size_t record_bytes)
{
	return kFrameHeaderBytes + ((record_bytes + 7) & ~static_cast<size_t>(7));
}

void StoreLittleEndian32(uint8_t *out, uint32_t value)
{
	out[0] = static_cast<uint8_t>(value);
	out[1] = static_cast<uint8_t>(value >> 8);
	out[2] = static_cast<uint8_t>(value >> 16);
	out[3] = static_cast<uint8_t>(value >> 24);
}

void FreeDeliveredBatch(Napi::Env, uint8_t *, ConsumerBatch *batch)
{
	delete batch;
}

} // namespace

// Runs on the JavaScript thread. When the thread-safe function is destroyed after stop() aborted
// it, Node calls this with a null env for each batch still queued, which is counted and freed.
void DeliverBatch(Napi::Env env, Napi::Function on_batch, DeliveryContext *context,
		  ConsumerBatch *batch)
{
	if (static_cast<napi_env>(env) == nullptr) {
		batch->counters->discarded_records += batch->record_count;
		delete batch;
		return;
	}

	if (batch->error != 0) {
		Napi::Error error = ErrnoError(env, batch->error_operation, batch->error);
		delete batch;
		if (context->on_error.IsEmpty())
			throw error; // reported as an uncaught exception
		context->on_error.Call({error.Value()});
		return;
	}

	uint32_t count = batch->record_count;
	// The Buffer takes over the batch's memory and frees it in its finalizer. Where external
	// buffers are not allowed, NewOrCopy copies the bytes and frees the batch at once.
	Napi::Buffer<uint8_t> buffer = Napi::Buffer<uint8_t>::NewOrCopy(
		env, batch->bytes.data(), batch->bytes.size(), FreeDeliveredBatch, batch);
	on_batch.Call({buffer, Napi::Number::New(env, count)});
}

void RingBufferConsumer::Init(Napi::Env env, Napi::Object exports)
{
	Napi::Function constructor =
		DefineClass(env, "RingBufferConsumer",
			    {
				    InstanceMethod<&RingBufferConsumer::Start>("start"),
				    InstanceMethod<&RingBufferConsumer::Stop>("stop"),
				    InstanceMethod<&RingBufferConsumer::Release>("release"),
				    InstanceMethod<&RingBufferConsumer::Stats>("stats"),
				    InstanceAccessor<&RingBufferConsumer::GetRunning>("running"),
			    });
	exports.Set("RingBufferConsumer", constructor);
}

RingBufferConsumer::RingBufferConsumer(const Napi::CallbackInfo &info)
	: Napi::ObjectWrap<RingBufferConsumer>(info)
{
	Napi::Env env = info.Env();
	map_fd_ = ArgFd(info, 0, "mapFd");
	Napi::Function on_batch = ArgFunction(info, 1, "onBatch");
	Napi::Object options = Napi::Object::New(env);
	if (!info[2].IsUndefined()) {
		if (!info[2].IsObject())
			ThrowTypeError(env, "options must be an object");
		options = info[2].As<Napi::Object>();
	}
	max_batch_bytes_ = static_cast<size_t>(
		OptionInteger(options, "maxBatchBytes", 16, 1 << 30, kDefaultMaxBatchBytes));
	poll_timeout_ms_ = static_cast<int>(
		OptionInteger(options, "pollTimeoutMs", 1, 60000, kDefaultPollTimeoutMs));
	max_queued_batches_ = static_cast<size_t>(
		OptionInteger(options, "maxQueuedBatches", 1, 65536, kDefaultMaxQueuedBatches));
	max_unreleased_batches_ = static_cast<size_t>(OptionInteger(
		options, "maxUnreleasedBatches", 0, 65536, kDefaultMaxUnreleasedBatches));
	Napi::Value on_error = options.Get("onError");
	if (!on_error.IsUndefined() && !on_error.IsFunction())
		ThrowTypeError(env, "options.onError must be a function");
	registry_ = GetAddonState(env).registry;
	on_batch_ = Napi::Persistent(on_batch);
	if (on_error.IsFunction())
		on_error_ = Napi::Persistent(on_error.As<Napi::Function>());

	std::string operation = "create ring buffer consumer for map fd " + std::to_string(map_fd_);
	wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (wake_fd_ < 0)
		ThrowErrno(env, operation + ": eventfd", errno);
	ring_ = ring_buffer__new(map_fd_, OnRecord, this, nullptr);
	if (ring_ == nullptr) {
		int err = errno;
		close(wake_fd_);
		wake_fd_ = -1;
		ThrowErrno(env, operation, err);
	}
	registry_->Add(this);
}

RingBufferConsumer::~RingBufferConsumer()
{
	Shutdown();
	registry_->Remove(this);
}

void RingBufferConsumer::ReleaseResource() noexcept
{
	Shutdown();
}

void RingBufferConsumer::Start(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	if (state_ == State::kRunning)
		ThrowError(env, "start ring buffer consumer: the consumer is already running");
	if (state_ == State::kStopped)
		ThrowError(env,
			   "start ring buffer consumer: the consumer was stopped; create a new "
			   "RingBufferConsumer");

	auto *context = new DeliveryContext();
	if (!on_error_.IsEmpty())
		context->on_error = Napi::Persistent(on_error_.Value());
	delivery_ = DeliveryFunction::New(
		env, on_batch_.Value(), "sigil ring buffer consumer", max_queued_batches_, 1,
		context, [](Napi::Env, void *, DeliveryContext *done) { delete done; });

	stop_requested_ = false;
	try {
		thread_ = std::thread(&RingBufferConsumer::Run, this);
	} catch (const std::system_error &error) {
		delivery_.Abort();
		ThrowErrno(env, "start ring buffer consumer: create thread", error.code().value());
	}
	state_ = State::kRunning;
	// A running consumer stays alive without a JavaScript reference, as a timer does.
	Ref();
}

void RingBufferConsumer::Stop(const Napi::CallbackInfo &)
{
	bool was_running = state_ == State::kRunning;
	Shutdown();
	if (was_running)
		Unref();
}

void RingBufferConsumer::Shutdown() noexcept
{
	if (state_ == State::kRunning) {
		{
			// Under the mutex, so a thread about to wait for a release reads the request first.
			std::lock_guard<std::mutex> lock(release_mutex_);
			stop_requested_ = true;
		}
		release_cv_.notify_all();
		uint64_t increment = 1;
		// Only fails if the counter would overflow, which one write cannot cause.
		(void)!write(wake_fd_, &increment, sizeof(increment));
		// Abort wakes the thread if it waits for queue space in BlockingCall, so the join
		// below also returns when this runs inside onBatch or with a full queue. Batches
		// still queued are discarded (DeliverBatch with a null env). The thread-safe
		// function is deleted only by this JavaScript thread's event loop, so the worker
		// may still call it until the join below returns.
		delivery_.Abort();
		thread_.join();
	}
	if (ring_ != nullptr) {
		ring_buffer__free(ring_);
		ring_ = nullptr;
	}
	if (wake_fd_ >= 0) {
		close(wake_fd_);
		wake_fd_ = -1;
	}
	state_ = State::kStopped;
}

void RingBufferConsumer::Release(const Napi::CallbackInfo &)
{
	{
		std::lock_guard<std::mutex> lock(release_mutex_);
		if (unreleased_batches_ > 0)
			unreleased_batches_--;
	}
	release_cv_.notify_one();
}

Napi::Value RingBufferConsumer::Stats(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	Napi::Object stats = Napi::Object::New(env);
	// Numbers are exact up to 2^53, which a counter does not reach in practice.
	stats.Set("records", Napi::Number::New(env, static_cast<double>(counters_->records)));
	stats.Set("batches", Napi::Number::New(env, static_cast<double>(counters_->batches)));
	stats.Set("bytes", Napi::Number::New(env, static_cast<double>(counters_->bytes)));
	stats.Set("discardedRecords",
		  Napi::Number::New(env, static_cast<double>(counters_->discarded_records)));
	return stats;
}

Napi::Value RingBufferConsumer::GetRunning(const Napi::CallbackInfo &info)
{
	return Napi::Boolean::New(info.Env(), state_ == State::kRunning);
}

void RingBufferConsumer::Run()
{
	// Named so that top -H and /proc/<pid>/task/<tid>/comm tell the reader from Node's threads.
	// A failure only leaves the inherited name.
	pthread_setname_np(pthread_self(), "sigil-ringbuf");
	pollfd fds[2] = {
		{ring_buffer__epoll_fd(ring_), POLLIN, 0},
		{wake_fd_, POLLIN, 0},
	};
	while (!stop_requested_.load()) {
		int ready = poll(fds, 2, poll_timeout_ms_);
		if (ready < 0) {
			if (errno == EINTR)
				continue;
			ReportFailure("poll ring buffer", errno);
			break;
		}
		if (fds[1].revents != 0)
			break;
		// Consume after a timeout too, which picks up records that the BPF side submitted
		// with BPF_RB_NO_WAKEUP.
		int consumed = ring_buffer__consume(ring_);
		if (consumed == kConsumeCancelled)
			break;
		if (consumed < 0) {
			ReportFailure("consume ring buffer", -consumed);
			break;
		}
		if (!FlushBatch())
			break;
	}
	if (pending_) {
		counters_->discarded_records += pending_->record_count;
		pending_.reset();
	}
}

int RingBufferConsumer::OnRecord(void *context, void *data, size_t size)
{
	return static_cast<RingBufferConsumer *>(context)->AppendRecord(data, size);
}

// Copies one record into the pending batch. libbpf advances the consumer position past the
// record whatever this returns, so a record seen here is consumed from the ring buffer.
int RingBufferConsumer::AppendRecord(const void *data, size_t size)
{
	counters_->records++;
	counters_->bytes += size;
	if (stop_requested_.load()) {
		counters_->discarded_records++;
		return kConsumeCancelled;
	}

	size_t frame = FrameBytes(size);
	if (pending_ && pending_->bytes.size() + frame > max_batch_bytes_ && !FlushBatch()) {
		counters_->discarded_records++;
		return kConsumeCancelled;
	}
	if (!pending_) {
		pending_ = std::make_unique<ConsumerBatch>();
		pending_->counters = counters_;
		pending_->bytes.reserve(std::min(max_batch_bytes_, kInitialBatchCapacity));
	}

	// A record larger than maxBatchBytes still goes out whole, alone in its batch.
	std::vector<uint8_t> &bytes = pending_->bytes;
	size_t offset = bytes.size();
	bytes.resize(offset + frame); // zero-fills the reserved header word and the padding
	StoreLittleEndian32(&bytes[offset], static_cast<uint32_t>(size));
	memcpy(&bytes[offset + kFrameHeaderBytes], data, size);
	pending_->record_count++;
	return 0;
}

// Hands the pending batch to JavaScript, waiting while the queue is full. Returns false when the
// thread-safe function is closing (stop() or environment shutdown); the batch is then discarded.
bool RingBufferConsumer::FlushBatch()
{
	if (!pending_ || pending_->record_count == 0)
		return true;
	if (max_unreleased_batches_ > 0 && !WaitForRelease()) {
		counters_->discarded_records += pending_->record_count;
		pending_.reset();
		return false;
	}
	ConsumerBatch *batch = pending_.release();
	napi_status status = delivery_.BlockingCall(batch);
	if (status != napi_ok) {
		counters_->discarded_records += batch->record_count;
		delete batch;
		return false;
	}
	counters_->batches++;
	return true;
}

// Waits until fewer than maxUnreleasedBatches batches are unreleased, then counts one more.
// Returns false when stop() interrupts the wait.
bool RingBufferConsumer::WaitForRelease()
{
	std::unique_lock<std::mutex> lock(release_mutex_);
	release_cv_.wait(lock, [this] {
		return stop_requested_.load() || unreleased_batches_ < max_unreleased_batches_;
	});
	if (stop_requested_.load())
		return false;
	unreleased_batches_++;
	return true;
}

void RingBufferConsumer::ReportFailure(const std::string &operation, int err)
{
	auto *batch = new ConsumerBatch();
	batch->counters = counters_;
	batch->error = err;
	batch->error_operation = operation + " (map fd " + std::to_string(map_fd_) + ")";
	if (delivery_.BlockingCall(batch) != napi_ok)
		delete batch;
}

} // namespace sigil
