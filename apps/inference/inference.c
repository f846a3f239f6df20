/* inference: run a deploy directory written by mera.build, as the 2021
 * MERA docs' apps/mera_cpp/inference did.
 *
 *   ./inference <deploy_dir> [-n runs] [-w warmup] [-o out_dir] [-m]
 *
 * dlopens <deploy_dir>/deploy.so, checks its ABI version, loads the
 * directory, reads <deploy_dir>/input0.bin, input1.bin, ... (the raw bytes
 * of each input, e.g. float32 NHWC), warms up, runs `runs` times (100 by
 * default) and prints the mean wall time per run on this host ("Took X msec.",
 * saying when that time is the host's emulation of the IP or the Simulator);
 * for the Simulator and IP targets then the device latency alone (cycles at
 * the device clock) and the modelled host time on its own line. Then, for each
 * output k with a <deploy_dir>/ref_result_k.bin, it prints mera.test_util's
 * comparison lines (max abs diff, mean abs diff, correct ratio: the share of
 * elements exactly equal), and the peak resident memory of the process
 * (VmHWM; getrusage's ru_maxrss where /proc is missing). -o writes
 * each output's raw bytes to <out_dir>/output_k.bin. -m prints, after the
 * peak, where the resident memory is at that point (/proc/self/smaps: the
 * heap, large anonymous blocks, deploy.params, deploy.so, the stack and
 * the other files) and what malloc holds (glibc).
 *
 * Any error (a missing or short input file, a corrupt deploy directory)
 * prints the message on stderr and exits with a non-zero status. */
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
#include <malloc.h>
#define HAVE_MALLINFO2 1
#endif

#include "mera_deploy.h"

#define ERR_LEN 1024

typedef struct {
    int (*abi_version)(void);
    mera_deploy *(*create)(const char *, int *, char *, size_t);
    void (*destroy)(mera_deploy *);
    int (*num_inputs)(const mera_deploy *);
    int (*num_outputs)(const mera_deploy *);
    int (*input_info)(const mera_deploy *, int, mera_deploy_tensor_info *, char *, size_t);
    int (*output_info)(const mera_deploy *, int, mera_deploy_tensor_info *, char *, size_t);
    int (*set_input)(mera_deploy *, int, const void *, size_t, char *, size_t);
    int (*run)(mera_deploy *, char *, size_t);
    int (*get_output)(const mera_deploy *, int, void *, size_t, char *, size_t);
    int (*get_metrics)(const mera_deploy *, mera_deploy_metrics *);
} deploy_api;

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("inference: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("out of memory (%zu bytes)", n);
    return p;
}

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Opens a regular file of exactly `want` bytes for reading; dies on a
 * missing file, another kind of file, or another size. */
static int open_exact(const char *path, size_t want, const char *what)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die("cannot open %s '%s': %s", what, path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        die("%s '%s' is not a regular file", what, path);
    if ((unsigned long long)st.st_size != (unsigned long long)want)
        die("%s '%s' has %lld bytes, expected %zu", what, path, (long long)st.st_size, want);
    return fd;
}

/* The `want` bytes of fd (open_exact's) into a new buffer. */
static void *read_fd(int fd, size_t want, const char *path, const char *what)
{
    char *buf = xmalloc(want);
    for (size_t got = 0; got < want;) {
        ssize_t n = read(fd, buf + got, want - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            die("cannot read %s '%s': %s", what, path, n < 0 ? strerror(errno) : "short read");
        got += (size_t)n;
    }
    return buf;
}

/* Reads exactly `want` bytes of a regular file; dies on a missing, short or long file. */
static void *read_exact(const char *path, size_t want, const char *what)
{
    int fd = open_exact(path, want, what);
    void *buf = read_fd(fd, want, path, what);
    close(fd);
    return buf;
}

/* An input file: mapped read-only when it can be (its pages leave the
 * process at unmap_input, so that no freed buffer of the app's stays in
 * the heap while the model runs), else read; the checks of open_exact. */
typedef struct {
    void *data;
    size_t len;
    int mapped;
} input_file;

static input_file map_exact(const char *path, size_t want, const char *what)
{
    static char empty;
    input_file in = {&empty, 0, 0};
    int fd = open_exact(path, want, what);
    if (want) {
        void *p = mmap(NULL, want, PROT_READ, MAP_PRIVATE, fd, 0);
        in.mapped = p != MAP_FAILED;
        in.data = in.mapped ? p : read_fd(fd, want, path, what);
        in.len = want;
    }
    close(fd);
    return in;
}

static void unmap_input(input_file *in)
{
    if (in->mapped)
        munmap(in->data, in->len);
    else if (in->len)
        free(in->data);
}

static void *sym(void *lib, const char *name, const char *path)
{
    dlerror();
    void *p = dlsym(lib, name);
    if (!p)
        die("'%s' does not export %s: not a mera deploy library", path, name);
    return p;
}

#if defined(__x86_64__)
#define THIS_MACHINE EM_X86_64
#elif defined(__aarch64__)
#define THIS_MACHINE EM_AARCH64
#endif

static const char *machine_name(int em)
{
    switch (em) {
    case EM_X86_64: return "x86-64 (mera.build host_arch=\"x86\")";
    case EM_AARCH64: return "aarch64 (mera.build host_arch=\"arm\")";
    default: return NULL;
    }
}

/* dlopen says "No such file or directory" for a library built for another
 * machine: say which machine it was built for instead. */
static void check_machine(const char *path, int em)
{
#ifdef THIS_MACHINE
    if (em == THIS_MACHINE)
        return;
    const char *built = machine_name(em);
    if (built)
        die("'%s' was built for %s, but this app runs on %s: run it on that machine, or rebuild the directory "
            "for this one", path, built, machine_name(THIS_MACHINE));
    die("'%s' was built for ELF machine type %d, but this app runs on %s", path, em, machine_name(THIS_MACHINE));
#else
    (void)path;
    (void)em;
#endif
}

/* The largest deploy.so accepted (a real one is a few MiB), as in mera.load_runtime_module. */
#define DEPLOY_SO_MAX_BYTES (256ull << 20)

/* dlopen maps a shared library without checking that the file holds what its
 * headers describe, and a truncated one crashes the loader (SIGBUS): check the
 * ELF header, the program headers and the section header table against the
 * file's size first. */
static void check_elf(const char *path)
{
    /* O_NONBLOCK: a FIFO in its place must not block the open */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
    if (!f)
        die("cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode))
        die("'%s' is not a regular file", path);
    unsigned long long size = (unsigned long long)st.st_size;
    if (size > DEPLOY_SO_MAX_BYTES)
        die("'%s' has %llu bytes, more than the limit of %llu for a deploy.so", path, size,
            (unsigned long long)DEPLOY_SO_MAX_BYTES);
    Elf64_Ehdr eh;
    if (size < sizeof eh || fread(&eh, sizeof eh, 1, f) != 1 || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0)
        die("'%s' is not a shared library (no ELF header): a corrupt deploy directory", path);
    if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB)
        die("'%s' is not a 64-bit little-endian ELF library", path);
    check_machine(path, eh.e_machine);
    if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 ||
        eh.e_phoff + (unsigned long long)eh.e_phnum * sizeof(Elf64_Phdr) > size ||
        (eh.e_shnum && eh.e_shoff + (unsigned long long)eh.e_shnum * eh.e_shentsize > size))
        die("'%s' is truncated or corrupt: its ELF headers describe more than its %llu bytes", path, size);
    for (int i = 0; i < eh.e_phnum; i++) {
        Elf64_Phdr ph;
        if (fseek(f, (long)(eh.e_phoff + (unsigned long long)i * sizeof ph), SEEK_SET) != 0 ||
            fread(&ph, sizeof ph, 1, f) != 1)
            die("cannot read the program headers of '%s'", path);
        if (ph.p_offset + ph.p_filesz > size)
            die("'%s' is truncated: segment %d ends at byte %llu of %llu", path, i,
                (unsigned long long)(ph.p_offset + ph.p_filesz), size);
    }
    fclose(f);
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static const char *dtype_name(int dt)
{
    switch (dt) {
    case MERA_DEPLOY_FLOAT32: return "float32";
    case MERA_DEPLOY_INT8: return "int8";
    case MERA_DEPLOY_UINT8: return "uint8";
    case MERA_DEPLOY_INT32: return "int32";
    case MERA_DEPLOY_INT64: return "int64";
    default: return "?";
    }
}

static size_t dtype_size(int dt)
{
    return dt == MERA_DEPLOY_INT64 ? 8 : dt == MERA_DEPLOY_FLOAT32 || dt == MERA_DEPLOY_INT32 ? 4 : 1;
}

static double element(const void *p, int dt, size_t i)
{
    switch (dt) {
    case MERA_DEPLOY_FLOAT32: return ((const float *)p)[i];
    case MERA_DEPLOY_INT8: return ((const int8_t *)p)[i];
    case MERA_DEPLOY_UINT8: return ((const uint8_t *)p)[i];
    case MERA_DEPLOY_INT64: return (double)((const int64_t *)p)[i];
    default: return ((const int32_t *)p)[i];
    }
}

/* mera.test_util.verify_output's lines: max and mean of |result - ref|, and
 * the share of elements exactly equal (as the output dtype: NaN != NaN). */
static void compare(const void *res, const void *ref, int dt, size_t n)
{
    double max_diff = 0, sum = 0;
    size_t equal = 0;
    int nan = 0;
    for (size_t i = 0; i < n; i++) {
        double a = element(res, dt, i), b = element(ref, dt, i);
        double d = fabs(a - b);
        if (isnan(d))
            nan = 1; /* as NumPy's max and mean: NaN propagates */
        else if (d > max_diff)
            max_diff = d;
        sum += d;
        equal += a == b;
    }
    if (nan)
        max_diff = NAN;
    printf("max abs diff: %g\n", max_diff);
    printf("mean abs diff: %g\n", n ? sum / (double)n : 0.0);
    printf("correct ratio: %g\n", (double)equal / (double)(n ? n : 1));
}

/* Peak resident memory of this process, KiB: Linux's VmHWM (of this program
 * since exec), else getrusage's ru_maxrss. On Linux ru_maxrss also counts
 * the parent's memory at fork time (a child of a 500 MiB Python process
 * reports 500 MiB), so it is only the fallback. */
static double peak_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (f) {
        char line[256];
        long long kib = -1;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "VmHWM: %lld kB", &kib) == 1)
                break;
        fclose(f);
        if (kib >= 0)
            return (double)kib;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss;
}

/* Where the resident memory of this process is now, from /proc/self/smaps
 * (Linux): the Rss of each mapping by what it maps. Nothing where /proc is
 * missing. */
static void print_resident(void)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return;
    enum { HEAP, ANON, PARAMS, SO, STACK, FILES, N };
    static const char *const what[N] = {"heap (malloc)", "anonymous mappings (large allocations)", "deploy.params",
                                        "deploy.so", "stack", "other files (the app and its libraries)"};
    double kib[N] = {0}, total = 0;
    int kind = FILES;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        int name_at = -1;
        long long kb;
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &lo, &hi, &name_at) == 2 && name_at > 0) {
            const char *name = line + name_at;
            size_t n = strcspn(name, "\n");
            if (n == 0)
                kind = ANON;
            else if (n == 6 && strncmp(name, "[heap]", 6) == 0)
                kind = HEAP;
            else if (n == 7 && strncmp(name, "[stack]", 7) == 0)
                kind = STACK;
            else if (n >= 14 && strncmp(name + n - 14, "/deploy.params", 14) == 0)
                kind = PARAMS;
            else if (n >= 10 && strncmp(name + n - 10, "/deploy.so", 10) == 0)
                kind = SO;
            else
                kind = FILES;
        } else if (sscanf(line, "Rss: %lld kB", &kb) == 1) {
            kib[kind] += (double)kb;
            total += (double)kb;
        }
    }
    fclose(f);
    printf("Resident now: %.1f MiB:", total / 1024.0);
    for (int k = 0; k < N; k++)
        printf("%s %s %.1f", k ? "," : "", what[k], kib[k] / 1024.0);
#ifdef HAVE_MALLINFO2
    struct mallinfo2 mi = mallinfo2();
    printf("; malloc'd and not freed: %.1f MiB", (double)(mi.uordblks + mi.hblkhd) / 1048576.0);
#endif
    printf("\n");
}

static void usage(void)
{
    fprintf(stderr, "usage: inference <deploy_dir> [-n runs] [-w warmup] [-o out_dir] [-m]\n"
                    "  runs a deploy directory written by mera.build: reads input0.bin, input1.bin, ...,\n"
                    "  times `runs` inferences (default 100, after `warmup` = 1), compares each output k\n"
                    "  with ref_result_k.bin when present; -o writes output_k.bin files; -m says where the\n"
                    "  resident memory is after the runs.\n"
                    "  deploy.so is native code: load only directories you trust (docs/deploy.md, \"Trust boundary\").\n");
    exit(2);
}

static long parse_count(const char *s, const char *opt, long min)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < min || v > 100000000)
        die("%s needs an integer >= %ld, got '%s'", opt, min, s);
    return v;
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *out_dir = NULL;
    int memory_report = 0;
    long runs = 100, warmup = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            usage();
        else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
            runs = parse_count(argv[++i], "-n", 1);
        else if (strcmp(argv[i], "-w") == 0 && i + 1 < argc)
            warmup = parse_count(argv[++i], "-w", 0);
        else if (strcmp(argv[i], "-m") == 0)
            memory_report = 1;
        else if (strcmp(argv[i], "-o") == 0 && i + 1 < argc)
            out_dir = argv[++i];
        else if (argv[i][0] == '-' || dir)
            usage();
        else
            dir = argv[i];
    }
    if (!dir)
        usage();
    setvbuf(stdout, NULL, _IOLBF, 0);
    char err[ERR_LEN] = "";

    printf("Loading runtime module...\n");
    char *lib_path = path_join(dir, "deploy.so");
    if (!file_exists(lib_path))
        die("'%s' does not exist: not a deploy directory (mera.build writes deploy.so, deploy.params, deploy.json)",
            lib_path);
    check_elf(lib_path);
    void *lib = dlopen(lib_path, RTLD_NOW | RTLD_LOCAL);
    if (!lib)
        die("cannot load '%s': %s", lib_path, dlerror());
    deploy_api api;
    *(void **)&api.abi_version = sym(lib, "mera_deploy_abi_version", lib_path);
    *(void **)&api.create = sym(lib, "mera_deploy_create", lib_path);
    *(void **)&api.destroy = sym(lib, "mera_deploy_destroy", lib_path);
    *(void **)&api.num_inputs = sym(lib, "mera_deploy_num_inputs", lib_path);
    *(void **)&api.num_outputs = sym(lib, "mera_deploy_num_outputs", lib_path);
    *(void **)&api.input_info = sym(lib, "mera_deploy_input_info", lib_path);
    *(void **)&api.output_info = sym(lib, "mera_deploy_output_info", lib_path);
    *(void **)&api.set_input = sym(lib, "mera_deploy_set_input", lib_path);
    *(void **)&api.run = sym(lib, "mera_deploy_run", lib_path);
    *(void **)&api.get_output = sym(lib, "mera_deploy_get_output", lib_path);
    *(void **)&api.get_metrics = sym(lib, "mera_deploy_get_metrics", lib_path);
    int abi = api.abi_version();
    if (abi != MERA_DEPLOY_ABI_VERSION)
        die("'%s' implements deploy ABI version %d; this app speaks version %d (rebuild one of them)", lib_path, abi,
            MERA_DEPLOY_ABI_VERSION);

    printf("Loading json data and parameters...\n");
    int status = 0;
    mera_deploy *d = api.create(dir, &status, err, sizeof err);
    if (!d)
        die("%s (status %d)", err[0] ? err : "loading the deploy directory failed", status);

    printf("Loading input...\n");
    int n_in = api.num_inputs(d), n_out = api.num_outputs(d);
    for (int i = 0; i < n_in; i++) {
        mera_deploy_tensor_info info;
        if (api.input_info(d, i, &info, err, sizeof err))
            die("%s", err);
        char name[32];
        snprintf(name, sizeof name, "input%d.bin", i);
        char *path = path_join(dir, name);
        char what[300];
        snprintf(what, sizeof what, "input %d ('%s', %s)", i, info.name ? info.name : "?", dtype_name(info.dtype));
        input_file in = map_exact(path, info.nbytes, what);
        if (api.set_input(d, i, in.data, info.nbytes, err, sizeof err))
            die("%s", err);
        unmap_input(&in);
        free(path);
    }

    printf("Warming up...\n");
    for (long i = 0; i < warmup; i++)
        if (api.run(d, err, sizeof err))
            die("%s", err);
    printf("Running %ld times...\n", runs);
    double t0 = now_ms();
    for (long i = 0; i < runs; i++)
        if (api.run(d, err, sizeof err))
            die("%s", err);
    double ms = (now_ms() - t0) / (double)runs;

    mera_deploy_metrics m;
    memset(&m, 0, sizeof m);
    if (api.get_metrics(d, &m))
        die("reading the metrics failed");
    const char *target = m.target ? m.target : "";
    const char *device = m.device ? m.device : "?";
    int is_sim = strcmp(target, "Simulator") == 0, is_ip = strcmp(target, "IP") == 0;
    /* The docs' "Took X msec." was a board's latency; here it is this host's wall time per run, which
     * for the Simulator and the emulated IP is the CPU's time to emulate the DNA. */
    if (is_ip && strcmp(device, "emulated") == 0)
        printf("Took %.2f msec. (host emulation of the IP; device estimate below)\n", ms);
    else if (is_sim)
        printf("Took %.2f msec. (host run of the Simulator; its estimate below)\n", ms);
    else
        printf("Took %.2f msec.\n", ms);
    if (is_sim)
        printf("Simulator total latency: %.3f us\n", m.device_us + m.host_us);
    if (is_sim || is_ip) {
        printf("Device latency: %.3f us (%" PRId64 " cycles at %g MHz on %s, device '%s')\n", m.device_us,
               m.device_cycles, m.clock_mhz, m.platform ? m.platform : "?", is_ip ? device : "simulated");
        printf("Host time (modelled): %.3f us (host nodes, PCIe transfers, call); end-to-end estimate %.3f us\n",
               m.host_us, m.device_us + m.host_us);
    }
    /* Before the comparison, so that the log ends as the docs' did. */
    printf("Peak memory: %.1f MiB (weights %.1f MiB, arena %.1f MiB)\n", peak_rss_kib() / 1024.0,
           (double)m.weights_bytes / 1048576.0, (double)m.arena_bytes / 1048576.0);
    if (memory_report)
        print_resident();

    for (int k = 0; k < n_out; k++) {
        mera_deploy_tensor_info info;
        if (api.output_info(d, k, &info, err, sizeof err))
            die("%s", err);
        void *res = xmalloc(info.nbytes);
        if (api.get_output(d, k, res, info.nbytes, err, sizeof err))
            die("%s", err);
        if (out_dir) {
            char name[32];
            snprintf(name, sizeof name, "output_%d.bin", k);
            char *path = path_join(out_dir, name);
            FILE *f = fopen(path, "wb");
            if (!f || fwrite(res, 1, info.nbytes, f) != info.nbytes || fclose(f) != 0)
                die("cannot write '%s': %s", path, strerror(errno));
            free(path);
        }
        char name[32];
        snprintf(name, sizeof name, "ref_result_%d.bin", k);
        char *path = path_join(dir, name);
        if (file_exists(path)) {
            char what[300];
            snprintf(what, sizeof what, "reference of output %d ('%s', %s)", k, info.name ? info.name : "?",
                     dtype_name(info.dtype));
            void *ref = read_exact(path, info.nbytes, what);
            if (n_out > 1)
                printf("output %d:\n", k);
            compare(res, ref, info.dtype, info.nbytes / dtype_size(info.dtype));
            free(ref);
        } else {
            printf("No %s: output %d not compared.\n", name, k);
        }
        free(path);
        free(res);
    }

    api.destroy(d);
    free(lib_path);
    return 0;
}
