// Writeback and page-cache release of a file that is only appended to, such as the JSON event
// log, on a libuv worker thread.
//
// A log written at hundreds of MB/s fills the page cache with pages that no process reads again.
// On a virtual machine whose host backs guest memory on first touch, every new page-cache page
// also costs a fault on the host. Writing the older part back and dropping it keeps the file's
// cache to a bounded tail, so the kernel reuses the pages it just freed.
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include <napi.h>

#include "args.h"
#include "errors.h"
#include "functions.h"

namespace sigil {

namespace {

constexpr int64_t kPageMask = ~static_cast<int64_t>(4095);
constexpr int64_t kMaxOffset = static_cast<int64_t>(1) << 52;

class TrimWorker : public Napi::AsyncWorker {
public:
	TrimWorker(Napi::Function callback, int fd, int64_t from, int64_t keep)
		: Napi::AsyncWorker(callback, "sigil.trimFileCache"), fd_(fd), from_(from),
		  keep_(keep)
	{
	}

protected:
	void Execute() override
	{
		struct stat st;
		if (fstat(fd_, &st) < 0)
			return Fail("fstat", errno);
		// Only a regular file has a page cache to release; a pipe or terminal has none.
		if (!S_ISREG(st.st_mode)) {
			regular_ = false;
			return;
		}
		int64_t end = st.st_size;
		// A file truncated below the released part (such as by copytruncate) starts over.
		if (from_ > end)
			from_ = 0;
		// Start writeback of every dirty page from the released part to the end of the file.
		if (sync_file_range(fd_, from_, 0, SYNC_FILE_RANGE_WRITE) < 0)
			return Fail("sync_file_range", errno);
		// Whole pages only: the kernel keeps a partial page at either end of the range.
		int64_t until = (end - keep_) & kPageMask;
		if (until <= from_)
			return;
		int64_t length = until - from_;
		unsigned int wait = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
				    SYNC_FILE_RANGE_WAIT_AFTER;
		if (sync_file_range(fd_, from_, length, wait) < 0)
			return Fail("sync_file_range", errno);
		// posix_fadvise returns the error number instead of setting errno.
		int err = posix_fadvise(fd_, from_, length, POSIX_FADV_DONTNEED);
		if (err != 0)
			return Fail("posix_fadvise", err);
		from_ = until;
	}

	void OnOK() override
	{
		Napi::Env env = Env();
		Napi::Object result = Napi::Object::New(env);
		result.Set("releasedTo", Napi::Number::New(env, static_cast<double>(from_)));
		result.Set("regular", Napi::Boolean::New(env, regular_));
		Callback().Call({env.Null(), result});
	}

	void OnError(const Napi::Error &) override
	{
		Napi::Env env = Env();
		std::string action = operation_ + " fd " + std::to_string(fd_);
		Callback().Call({ErrnoError(env, action, err_).Value()});
	}

private:
	void Fail(const char *operation, int err)
	{
		operation_ = operation;
		err_ = err;
		SetError(operation_);
	}

	int fd_;
	int64_t from_;
	int64_t keep_;
	bool regular_ = true;
	std::string operation_;
	int err_ = 0;
};

// trimFileCache(fd, from, keep, callback): on a worker thread, starts writeback of the dirty
// pages of fd from offset `from` on, then writes back and drops the pages from `from` up to
// `keep` bytes before the end of the file. Calls callback(error) or
// callback(null, {releasedTo, regular}): the offset up to which the cache was released, and
// whether fd is a regular file (nothing is done for other files).
Napi::Value TrimFileCache(const Napi::CallbackInfo &info)
{
	int fd = ArgFd(info, 0, "fd");
	int64_t from = ArgInteger(info, 1, "from", 0, kMaxOffset);
	int64_t keep = ArgInteger(info, 2, "keep", 0, kMaxOffset);
	Napi::Function callback = ArgFunction(info, 3, "callback");
	auto *worker = new TrimWorker(callback, fd, from, keep);
	worker->Queue();
	return info.Env().Undefined();
}

} // namespace

void InitFileCache(Napi::Env env, Napi::Object exports)
{
	exports.Set("trimFileCache", Napi::Function::New<TrimFileCache>(env));
}

} // namespace sigil
