/*
 * fake_nvml.c: a fake libnvidia-ml.so.1 for tests and `gpu-dra demo`.
 *
 * Exports a subset of the real NVML C API with the real nvml.h signatures, struct layouts,
 * return codes and error strings, answering from a JSON file named by $FAKE_NVML_CONFIG
 * (read when the init reference count goes from 0 to 1, and again at any later nvmlInit once
 * the file has changed: a node whose GPUs change under a running driver). Events (XIDs, MIG
 * configuration changes) are lines appended to the file named by $FAKE_NVML_EVENTS. MIG GPU and
 * compute instances can be created and destroyed under the real placement rules; they are kept
 * in a state file next to the config, so they outlive the process as they would in the kernel.
 * See README.md for the formats.
 *
 * Build: gcc -shared -fPIC -O2 -Wall -Wextra -Werror -o libnvidia-ml.so.1 fake_nvml.c
 *
 * No external dependencies: a small JSON parser is included. Handles (nvmlDevice_t,
 * nvmlGpuInstance_t, nvmlComputeInstance_t) are pointers into static arrays and are
 * range-checked, so a stale or foreign handle yields NVML_ERROR_INVALID_ARGUMENT instead of a
 * crash.
 */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/* ------------------------------------------------------------------------------------------ */
/* nvml.h types                                                                               */
/* ------------------------------------------------------------------------------------------ */

typedef enum nvmlReturn_enum {
  NVML_SUCCESS = 0,
  NVML_ERROR_UNINITIALIZED = 1,
  NVML_ERROR_INVALID_ARGUMENT = 2,
  NVML_ERROR_NOT_SUPPORTED = 3,
  NVML_ERROR_NO_PERMISSION = 4,
  NVML_ERROR_ALREADY_INITIALIZED = 5,
  NVML_ERROR_NOT_FOUND = 6,
  NVML_ERROR_INSUFFICIENT_SIZE = 7,
  NVML_ERROR_INSUFFICIENT_POWER = 8,
  NVML_ERROR_DRIVER_NOT_LOADED = 9,
  NVML_ERROR_TIMEOUT = 10,
  NVML_ERROR_IRQ_ISSUE = 11,
  NVML_ERROR_LIBRARY_NOT_FOUND = 12,
  NVML_ERROR_FUNCTION_NOT_FOUND = 13,
  NVML_ERROR_CORRUPTED_INFOROM = 14,
  NVML_ERROR_GPU_IS_LOST = 15,
  NVML_ERROR_RESET_REQUIRED = 16,
  NVML_ERROR_OPERATING_SYSTEM = 17,
  NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18,
  NVML_ERROR_IN_USE = 19,
  NVML_ERROR_MEMORY = 20,
  NVML_ERROR_NO_DATA = 21,
  NVML_ERROR_VGPU_ECC_NOT_SUPPORTED = 22,
  NVML_ERROR_INSUFFICIENT_RESOURCES = 23,
  NVML_ERROR_FREQ_NOT_SUPPORTED = 24,
  NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
  NVML_ERROR_DEPRECATED = 26,
  NVML_ERROR_NOT_READY = 27,
  NVML_ERROR_GPU_NOT_FOUND = 28,
  NVML_ERROR_INVALID_STATE = 29,
  NVML_ERROR_UNKNOWN = 999
} nvmlReturn_t;

#define NVML_STRUCT_VERSION(size, ver) ((unsigned int)((size) | ((unsigned int)(ver) << 24U)))

#define NVML_INIT_FLAG_NO_GPUS 1u
#define NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE 80
#define NVML_DEVICE_NAME_V2_BUFFER_SIZE 96
#define NVML_DEVICE_UUID_V2_BUFFER_SIZE 96
#define NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE 32
#define NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE 16
#define NVML_GPU_INSTANCE_PROFILE_COUNT 17
#define NVML_DEVICE_MIG_ENABLE 1

typedef struct nvmlDevice_st *nvmlDevice_t;
typedef struct nvmlGpuInstance_st *nvmlGpuInstance_t;
typedef struct nvmlEventSet_st *nvmlEventSet_t;
typedef struct nvmlComputeInstance_st *nvmlComputeInstance_t;

typedef struct nvmlEventData_st {
  nvmlDevice_t device;
  unsigned long long eventType;
  unsigned long long eventData;
  unsigned int gpuInstanceId;
  unsigned int computeInstanceId;
} nvmlEventData_t;

#define nvmlEventTypeSingleBitEccError 0x1ULL
#define nvmlEventTypeDoubleBitEccError 0x2ULL
#define nvmlEventTypeXidCriticalError 0x8ULL
#define nvmlEventMigConfigChange 0x100ULL
#define FAKE_DEFAULT_EVENT_TYPES \
  (nvmlEventTypeSingleBitEccError | nvmlEventTypeDoubleBitEccError | nvmlEventTypeXidCriticalError | \
   nvmlEventMigConfigChange)

typedef struct nvmlMemory_st {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
} nvmlMemory_t;

typedef struct nvmlMemory_v2_st {
  unsigned int version;
  unsigned long long total;
  unsigned long long reserved;
  unsigned long long free;
  unsigned long long used;
} nvmlMemory_v2_t;
#define nvmlMemory_v2 NVML_STRUCT_VERSION(sizeof(nvmlMemory_v2_t), 2)

typedef struct nvmlPciInfo_st {
  char busIdLegacy[NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE];
  unsigned int domain;
  unsigned int bus;
  unsigned int device;
  unsigned int pciDeviceId;
  unsigned int pciSubSystemId;
  char busId[NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE];
} nvmlPciInfo_t;

typedef struct nvmlGpuInstancePlacement_st {
  unsigned int start;
  unsigned int size;
} nvmlGpuInstancePlacement_t;

typedef struct nvmlGpuInstanceProfileInfo_st {
  unsigned int id;
  unsigned int isP2pSupported;
  unsigned int sliceCount;
  unsigned int instanceCount;
  unsigned int multiprocessorCount;
  unsigned int copyEngineCount;
  unsigned int decoderCount;
  unsigned int encoderCount;
  unsigned int jpegCount;
  unsigned int ofaCount;
  unsigned long long memorySizeMB;
} nvmlGpuInstanceProfileInfo_t;

typedef struct nvmlGpuInstanceProfileInfo_v2_st {
  unsigned int version;
  unsigned int id;
  unsigned int isP2pSupported;
  unsigned int sliceCount;
  unsigned int instanceCount;
  unsigned int multiprocessorCount;
  unsigned int copyEngineCount;
  unsigned int decoderCount;
  unsigned int encoderCount;
  unsigned int jpegCount;
  unsigned int ofaCount;
  unsigned long long memorySizeMB;
  char name[NVML_DEVICE_NAME_V2_BUFFER_SIZE];
} nvmlGpuInstanceProfileInfo_v2_t;
#define nvmlGpuInstanceProfileInfo_v2 NVML_STRUCT_VERSION(sizeof(nvmlGpuInstanceProfileInfo_v2_t), 2)

typedef struct nvmlGpuInstanceProfileInfo_v3_st {
  unsigned int version;
  unsigned int id;
  unsigned int sliceCount;
  unsigned int instanceCount;
  unsigned int multiprocessorCount;
  unsigned int copyEngineCount;
  unsigned int decoderCount;
  unsigned int encoderCount;
  unsigned int jpegCount;
  unsigned int ofaCount;
  unsigned long long memorySizeMB;
  char name[NVML_DEVICE_NAME_V2_BUFFER_SIZE];
  unsigned int capabilities;
} nvmlGpuInstanceProfileInfo_v3_t;
#define nvmlGpuInstanceProfileInfo_v3 NVML_STRUCT_VERSION(sizeof(nvmlGpuInstanceProfileInfo_v3_t), 3)

typedef struct nvmlGpuInstanceInfo_st {
  nvmlDevice_t device;
  unsigned int id;
  unsigned int profileId;
  nvmlGpuInstancePlacement_t placement;
} nvmlGpuInstanceInfo_t;

#define NVML_COMPUTE_INSTANCE_PROFILE_COUNT 9
#define NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_COUNT 1
#define NVML_GPU_VIRTUALIZATION_MODE_VGPU 2

typedef struct nvmlComputeInstancePlacement_st {
  unsigned int start;
  unsigned int size;
} nvmlComputeInstancePlacement_t;

typedef struct nvmlComputeInstanceProfileInfo_st {
  unsigned int id;
  unsigned int sliceCount;
  unsigned int instanceCount;
  unsigned int multiprocessorCount;
  unsigned int sharedCopyEngineCount;
  unsigned int sharedDecoderCount;
  unsigned int sharedEncoderCount;
  unsigned int sharedJpegCount;
  unsigned int sharedOfaCount;
} nvmlComputeInstanceProfileInfo_t;

typedef struct nvmlComputeInstanceProfileInfo_v2_st {
  unsigned int version;
  unsigned int id;
  unsigned int sliceCount;
  unsigned int instanceCount;
  unsigned int multiprocessorCount;
  unsigned int sharedCopyEngineCount;
  unsigned int sharedDecoderCount;
  unsigned int sharedEncoderCount;
  unsigned int sharedJpegCount;
  unsigned int sharedOfaCount;
  char name[NVML_DEVICE_NAME_V2_BUFFER_SIZE];
} nvmlComputeInstanceProfileInfo_v2_t;
#define nvmlComputeInstanceProfileInfo_v2 NVML_STRUCT_VERSION(sizeof(nvmlComputeInstanceProfileInfo_v2_t), 2)

typedef struct nvmlComputeInstanceProfileInfo_v3_st {
  unsigned int version;
  unsigned int id;
  unsigned int sliceCount;
  unsigned int instanceCount;
  unsigned int multiprocessorCount;
  unsigned int sharedCopyEngineCount;
  unsigned int sharedDecoderCount;
  unsigned int sharedEncoderCount;
  unsigned int sharedJpegCount;
  unsigned int sharedOfaCount;
  char name[NVML_DEVICE_NAME_V2_BUFFER_SIZE];
  unsigned int capabilities;
} nvmlComputeInstanceProfileInfo_v3_t;
#define nvmlComputeInstanceProfileInfo_v3 NVML_STRUCT_VERSION(sizeof(nvmlComputeInstanceProfileInfo_v3_t), 3)

typedef struct nvmlComputeInstanceInfo_st {
  nvmlDevice_t device; /* nvml.h says "parent device"; real NVML gives the MIG device (see README) */
  nvmlGpuInstance_t gpuInstance;
  unsigned int id;
  unsigned int profileId;
  nvmlComputeInstancePlacement_t placement;
} nvmlComputeInstanceInfo_t;

typedef struct nvmlDeviceAttributes_st {
  unsigned int multiprocessorCount;
  unsigned int sharedCopyEngineCount;
  unsigned int sharedDecoderCount;
  unsigned int sharedEncoderCount;
  unsigned int sharedJpegCount;
  unsigned int sharedOfaCount;
  unsigned int gpuInstanceSliceCount;
  unsigned int computeInstanceSliceCount;
  unsigned long long memorySizeMB;
} nvmlDeviceAttributes_t;

typedef struct nvmlDeviceAddressingMode_v1_st {
  unsigned int version;
  unsigned int value;
} nvmlDeviceAddressingMode_v1_t;
#define nvmlDeviceAddressingMode_v1 NVML_STRUCT_VERSION(sizeof(nvmlDeviceAddressingMode_v1_t), 1)

/* Layout checks against the real ABI (x86_64 / aarch64 LP64). */
_Static_assert(sizeof(nvmlPciInfo_t) == 68, "nvmlPciInfo_t layout");
_Static_assert(sizeof(nvmlMemory_t) == 24, "nvmlMemory_t layout");
_Static_assert(sizeof(nvmlEventData_t) == 32, "nvmlEventData_t layout");
_Static_assert(sizeof(nvmlGpuInstanceProfileInfo_t) == 48, "nvmlGpuInstanceProfileInfo_t layout");
_Static_assert(sizeof(nvmlGpuInstanceProfileInfo_v2_t) == 152, "nvmlGpuInstanceProfileInfo_v2_t layout");
_Static_assert(sizeof(nvmlGpuInstanceProfileInfo_v3_t) == 152, "nvmlGpuInstanceProfileInfo_v3_t layout");
_Static_assert(sizeof(nvmlGpuInstanceInfo_t) == 24, "nvmlGpuInstanceInfo_t layout");
_Static_assert(sizeof(nvmlComputeInstanceProfileInfo_t) == 36, "nvmlComputeInstanceProfileInfo_t layout");
_Static_assert(sizeof(nvmlComputeInstanceProfileInfo_v2_t) == 136, "nvmlComputeInstanceProfileInfo_v2_t layout");
_Static_assert(sizeof(nvmlComputeInstanceProfileInfo_v3_t) == 140, "nvmlComputeInstanceProfileInfo_v3_t layout");
_Static_assert(sizeof(nvmlComputeInstanceInfo_t) == 32, "nvmlComputeInstanceInfo_t layout");
_Static_assert(sizeof(nvmlDeviceAttributes_t) == 40, "nvmlDeviceAttributes_t layout");
_Static_assert(sizeof(nvmlDeviceAddressingMode_v1_t) == 8, "nvmlDeviceAddressingMode_v1_t layout");

/* ------------------------------------------------------------------------------------------ */
/* Return codes: names (for the config) and real-style strings (nvmlErrorString)              */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
  nvmlReturn_t code;
  const char *name;
  const char *text;
} code_desc;

static const code_desc CODES[] = {
    {NVML_SUCCESS, "SUCCESS", "Success"},
    {NVML_ERROR_UNINITIALIZED, "UNINITIALIZED", "Uninitialized"},
    {NVML_ERROR_INVALID_ARGUMENT, "INVALID_ARGUMENT", "Invalid Argument"},
    {NVML_ERROR_NOT_SUPPORTED, "NOT_SUPPORTED", "Not Supported"},
    {NVML_ERROR_NO_PERMISSION, "NO_PERMISSION", "Insufficient Permissions"},
    {NVML_ERROR_ALREADY_INITIALIZED, "ALREADY_INITIALIZED", "Already Initialized"},
    {NVML_ERROR_NOT_FOUND, "NOT_FOUND", "Not Found"},
    {NVML_ERROR_INSUFFICIENT_SIZE, "INSUFFICIENT_SIZE", "Insufficient Size"},
    {NVML_ERROR_INSUFFICIENT_POWER, "INSUFFICIENT_POWER", "Insufficient External Power"},
    {NVML_ERROR_DRIVER_NOT_LOADED, "DRIVER_NOT_LOADED", "Driver Not Loaded"},
    {NVML_ERROR_TIMEOUT, "TIMEOUT", "Timeout"},
    {NVML_ERROR_IRQ_ISSUE, "IRQ_ISSUE", "Interrupt request issue"},
    {NVML_ERROR_LIBRARY_NOT_FOUND, "LIBRARY_NOT_FOUND", "NVML Shared Library Not Found"},
    {NVML_ERROR_FUNCTION_NOT_FOUND, "FUNCTION_NOT_FOUND", "Function Not Found"},
    {NVML_ERROR_CORRUPTED_INFOROM, "CORRUPTED_INFOROM", "Corrupted infoROM"},
    {NVML_ERROR_GPU_IS_LOST, "GPU_IS_LOST", "GPU is lost"},
    {NVML_ERROR_RESET_REQUIRED, "RESET_REQUIRED", "GPU requires restart"},
    {NVML_ERROR_OPERATING_SYSTEM, "OPERATING_SYSTEM", "The operating system has blocked the request."},
    {NVML_ERROR_LIB_RM_VERSION_MISMATCH, "LIB_RM_VERSION_MISMATCH", "RM has detected an NVML/RM version mismatch."},
    {NVML_ERROR_IN_USE, "IN_USE", "In use by another client"},
    {NVML_ERROR_MEMORY, "MEMORY", "Insufficient Memory"},
    {NVML_ERROR_NO_DATA, "NO_DATA", "No data"},
    {NVML_ERROR_VGPU_ECC_NOT_SUPPORTED, "VGPU_ECC_NOT_SUPPORTED",
     "The requested vgpu operation is not available on target device, becasue ECC is enabled"},
    {NVML_ERROR_INSUFFICIENT_RESOURCES, "INSUFFICIENT_RESOURCES", "Insufficient resources for request"},
    {NVML_ERROR_FREQ_NOT_SUPPORTED, "FREQ_NOT_SUPPORTED", "Frequency not supported"},
    {NVML_ERROR_ARGUMENT_VERSION_MISMATCH, "ARGUMENT_VERSION_MISMATCH", "Argument version mismatch"},
    {NVML_ERROR_DEPRECATED, "DEPRECATED", "Deprecated"},
    {NVML_ERROR_NOT_READY, "NOT_READY", "Not Ready"},
    {NVML_ERROR_GPU_NOT_FOUND, "GPU_NOT_FOUND", "GPU not found"},
    {NVML_ERROR_INVALID_STATE, "INVALID_STATE", "Invalid state"},
    {NVML_ERROR_UNKNOWN, "UNKNOWN", "Unknown Error"},
};
#define NCODES (sizeof(CODES) / sizeof(CODES[0]))

/* "GPU_IS_LOST", "NVML_ERROR_GPU_IS_LOST" or a number; -1 if unknown. */
static long code_from_name(const char *s) {
  if (s == NULL || *s == '\0') return -1;
  if (isdigit((unsigned char)*s)) {
    char *end = NULL;
    long v = strtol(s, &end, 0);
    return (end != NULL && *end == '\0') ? v : -1;
  }
  if (strncmp(s, "NVML_ERROR_", 11) == 0) s += 11;
  else if (strncmp(s, "NVML_", 5) == 0) s += 5;
  for (size_t i = 0; i < NCODES; i++) {
    if (strcmp(CODES[i].name, s) == 0) return (long)CODES[i].code;
  }
  return -1;
}

/* ------------------------------------------------------------------------------------------ */
/* Minimal JSON parser                                                                        */
/* ------------------------------------------------------------------------------------------ */

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jtype;

typedef struct jval {
  jtype t;
  int b;
  double num;
  long long inum;
  int is_int;
  char *s;
  struct jval **items;
  char **keys;
  size_t n, cap;
} jval;

typedef struct {
  const char *p, *start;
  char err[256];
} jparser;

static void jfree(jval *v) {
  if (v == NULL) return;
  free(v->s);
  for (size_t i = 0; i < v->n; i++) {
    jfree(v->items[i]);
    if (v->keys != NULL) free(v->keys[i]);
  }
  free(v->items);
  free(v->keys);
  free(v);
}

static void jskip(jparser *ps) {
  while (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r') ps->p++;
}

static jval *jfail(jparser *ps, const char *msg) {
  if (ps->err[0] == '\0') {
    int line = 1;
    for (const char *q = ps->start; q < ps->p; q++)
      if (*q == '\n') line++;
    snprintf(ps->err, sizeof ps->err, "%s at line %d (offset %ld)", msg, line, (long)(ps->p - ps->start));
  }
  return NULL;
}

static jval *jnew(jtype t) {
  jval *v = calloc(1, sizeof *v);
  if (v != NULL) v->t = t;
  return v;
}

static int jpush(jval *arr, jval *item, char *key) {
  if (arr->n == arr->cap) {
    size_t nc = arr->cap ? arr->cap * 2 : 8;
    jval **ni = realloc(arr->items, nc * sizeof *ni);
    if (ni == NULL) return -1;
    arr->items = ni;
    if (arr->t == J_OBJ) {
      char **nk = realloc(arr->keys, nc * sizeof *nk);
      if (nk == NULL) return -1;
      arr->keys = nk;
    }
    arr->cap = nc;
  }
  arr->items[arr->n] = item;
  if (arr->t == J_OBJ) arr->keys[arr->n] = key;
  arr->n++;
  return 0;
}

static void put_utf8(char **o, unsigned cp) {
  char *q = *o;
  if (cp < 0x80) {
    *q++ = (char)cp;
  } else if (cp < 0x800) {
    *q++ = (char)(0xC0 | (cp >> 6));
    *q++ = (char)(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *q++ = (char)(0xE0 | (cp >> 12));
    *q++ = (char)(0x80 | ((cp >> 6) & 0x3F));
    *q++ = (char)(0x80 | (cp & 0x3F));
  } else {
    *q++ = (char)(0xF0 | (cp >> 18));
    *q++ = (char)(0x80 | ((cp >> 12) & 0x3F));
    *q++ = (char)(0x80 | ((cp >> 6) & 0x3F));
    *q++ = (char)(0x80 | (cp & 0x3F));
  }
  *o = q;
}

static char *jparse_string_raw(jparser *ps) {
  if (*ps->p != '"') return (char *)jfail(ps, "expected string");
  ps->p++;
  const char *q = ps->p;
  size_t len = 0;
  while (*q != '"') {
    if (*q == '\0') return (char *)jfail(ps, "unterminated string");
    if (*q == '\\') q++;
    if (*q == '\0') return (char *)jfail(ps, "unterminated string");
    q++;
    len++;
  }
  char *out = malloc(len * 4 + 1);
  if (out == NULL) return (char *)jfail(ps, "out of memory");
  char *o = out;
  while (*ps->p != '"') {
    char c = *ps->p++;
    if ((unsigned char)c < 0x20) {
      free(out);
      return (char *)jfail(ps, "control character in string");
    }
    if (c != '\\') {
      *o++ = c;
      continue;
    }
    c = *ps->p++;
    switch (c) {
      case '"': *o++ = '"'; break;
      case '\\': *o++ = '\\'; break;
      case '/': *o++ = '/'; break;
      case 'b': *o++ = '\b'; break;
      case 'f': *o++ = '\f'; break;
      case 'n': *o++ = '\n'; break;
      case 'r': *o++ = '\r'; break;
      case 't': *o++ = '\t'; break;
      case 'u': {
        unsigned cp = 0;
        for (int i = 0; i < 4; i++) {
          char h = *ps->p++;
          cp <<= 4;
          if (h >= '0' && h <= '9') cp |= (unsigned)(h - '0');
          else if (h >= 'a' && h <= 'f') cp |= (unsigned)(h - 'a' + 10);
          else if (h >= 'A' && h <= 'F') cp |= (unsigned)(h - 'A' + 10);
          else {
            free(out);
            return (char *)jfail(ps, "bad \\u escape");
          }
        }
        put_utf8(&o, cp);
        break;
      }
      default: free(out); return (char *)jfail(ps, "bad escape");
    }
  }
  ps->p++;
  *o = '\0';
  return out;
}

static jval *jparse_value(jparser *ps, int depth);

static jval *jparse_value(jparser *ps, int depth) {
  if (depth > 64) return jfail(ps, "nesting too deep");
  jskip(ps);
  char c = *ps->p;
  if (c == '{' || c == '[') {
    int obj = c == '{';
    jval *v = jnew(obj ? J_OBJ : J_ARR);
    if (v == NULL) return jfail(ps, "out of memory");
    ps->p++;
    jskip(ps);
    if (*ps->p == (obj ? '}' : ']')) {
      ps->p++;
      return v;
    }
    for (;;) {
      char *key = NULL;
      jskip(ps);
      if (obj) {
        key = jparse_string_raw(ps);
        if (key == NULL) goto fail;
        jskip(ps);
        if (*ps->p != ':') {
          free(key);
          jfail(ps, "expected ':'");
          goto fail;
        }
        ps->p++;
      }
      jval *item = jparse_value(ps, depth + 1);
      if (item == NULL || jpush(v, item, key) != 0) {
        free(key);
        jfree(item);
        jfail(ps, "bad value");
        goto fail;
      }
      jskip(ps);
      if (*ps->p == ',') {
        ps->p++;
        continue;
      }
      if (*ps->p == (obj ? '}' : ']')) {
        ps->p++;
        return v;
      }
      jfail(ps, obj ? "expected ',' or '}'" : "expected ',' or ']'");
      goto fail;
    }
  fail:
    jfree(v);
    return NULL;
  }
  if (c == '"') {
    char *s = jparse_string_raw(ps);
    if (s == NULL) return NULL;
    jval *v = jnew(J_STR);
    if (v == NULL) {
      free(s);
      return jfail(ps, "out of memory");
    }
    v->s = s;
    return v;
  }
  if (strncmp(ps->p, "true", 4) == 0 || strncmp(ps->p, "false", 5) == 0) {
    jval *v = jnew(J_BOOL);
    if (v == NULL) return jfail(ps, "out of memory");
    v->b = *ps->p == 't';
    ps->p += v->b ? 4 : 5;
    return v;
  }
  if (strncmp(ps->p, "null", 4) == 0) {
    ps->p += 4;
    return jnew(J_NULL);
  }
  if (c == '-' || isdigit((unsigned char)c)) {
    const char *q = ps->p;
    int is_int = 1;
    if (*q == '-') q++;
    while (isdigit((unsigned char)*q) || *q == '.' || *q == 'e' || *q == 'E' || *q == '+' || *q == '-') {
      if (*q == '.' || *q == 'e' || *q == 'E') is_int = 0;
      q++;
    }
    jval *v = jnew(J_NUM);
    if (v == NULL) return jfail(ps, "out of memory");
    char *end = NULL;
    v->num = strtod(ps->p, &end);
    if (end != q) {
      free(v);
      return jfail(ps, "bad number");
    }
    v->is_int = is_int;
    if (is_int) {
      errno = 0;
      v->inum = strtoll(ps->p, NULL, 10);
      if (errno != 0) {
        free(v);
        return jfail(ps, "integer out of range");
      }
    } else {
      v->inum = (long long)v->num;
    }
    ps->p = q;
    return v;
  }
  return jfail(ps, "unexpected character");
}

static jval *jget(const jval *obj, const char *key) {
  if (obj == NULL || obj->t != J_OBJ) return NULL;
  for (size_t i = 0; i < obj->n; i++)
    if (strcmp(obj->keys[i], key) == 0) return obj->items[i];
  return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* The simulated system                                                                       */
/* ------------------------------------------------------------------------------------------ */

#define MAX_GPUS 64
#define MAX_MIG 16     /* MIG devices (compute instances) per GPU */
#define MAX_GI_IDS 15  /* GPU-instance ids 0..14, as /proc/driver/nvidia-caps/mig-minors numbers them */
#define MAX_CI_IDS 8   /* compute-instance ids 0..7 within a GPU instance */
#define MAX_ERRS 24
#define MAX_PLACEMENTS 8
#define FN_NAME_MAX 64
#define DEV_MAGIC 0x4e564d4cu /* "NVML" */
#define GI_MAGIC 0x47504949u  /* "GPII" */
#define CI_MAGIC 0x43494e53u  /* "CINS" */

typedef struct {
  char fn[FN_NAME_MAX]; /* function name or "*" */
  nvmlReturn_t code;
} err_entry;

typedef struct {
  err_entry e[MAX_ERRS];
  unsigned n;
} err_table;

typedef struct {
  int present;
  unsigned id, isP2p, slices, instances, sms, ce, dec, enc, jpeg, ofa, capabilities;
  unsigned long long memMB;
  char name[NVML_DEVICE_NAME_V2_BUFFER_SIZE];
  nvmlGpuInstancePlacement_t placements[MAX_PLACEMENTS];
  unsigned nplacements;
} profile_t;

/*
 * Handles name an instance by ids, not by where its data sits: a GPU's handle structs are fixed
 * (one per GPU, per GI id, per GI/CI id pair), so they stay valid across a reload of the config
 * or the MIG state as long as the instance they name exists.
 */
struct nvmlDevice_st {
  unsigned magic;
  int gpu;
  int gi; /* -1: the full GPU */
  int ci;
};

struct nvmlGpuInstance_st {
  unsigned magic;
  int gpu;
  int gi;
};

struct nvmlComputeInstance_st {
  unsigned magic;
  int gpu;
  int gi;
  int ci;
};

/* A GPU instance, stored at its id. */
typedef struct {
  int used;
  unsigned profileId;
  int profileIndex;
  nvmlGpuInstancePlacement_t placement;
} gi_t;

/* A compute instance: one MIG device. */
typedef struct {
  int used;
  char uuid[NVML_DEVICE_UUID_V2_BUFFER_SIZE];
  unsigned giId, ciId;
  unsigned ciProfile; /* NVML_COMPUTE_INSTANCE_PROFILE_* (= the CI profile id) */
  nvmlComputeInstancePlacement_t ciPlacement;
  unsigned long long memTotal, memUsed;
  int busy; /* a process runs on it: destroying it answers IN_USE */
  err_table errs;
} mig_t;

typedef struct {
  struct nvmlDevice_st handle;
  struct nvmlDevice_st migHandles[MAX_GI_IDS][MAX_CI_IDS];
  struct nvmlGpuInstance_st giHandles[MAX_GI_IDS];
  struct nvmlComputeInstance_st ciHandles[MAX_GI_IDS][MAX_CI_IDS];
  char name[NVML_DEVICE_NAME_V2_BUFFER_SIZE];
  char uuid[NVML_DEVICE_UUID_V2_BUFFER_SIZE];
  int hasBrand, hasArch;
  unsigned brand, arch;
  int ccMajor, ccMinor;
  unsigned long long memTotal, memUsed;
  unsigned minor;
  unsigned domain, bus, device, pciDeviceId, pciSubSystemId;
  int hasNuma;
  unsigned numa;
  int hasAddressingMode;
  unsigned addressingMode;
  int hasSms;
  unsigned sms;
  unsigned virtMode; /* nvmlGpuVirtualizationMode_t */
  int migCapable;
  unsigned migCurrent, migPending, maxMig;
  profile_t profiles[NVML_GPU_INSTANCE_PROFILE_COUNT];
  gi_t gis[MAX_GI_IDS];
  mig_t migs[MAX_MIG]; /* unordered slots; enumerated in (GI id, CI id) order */
  int stateful;        /* the MIG layout is kept in the state file (see README) */
  int lost;
  unsigned long long supportedEvents;
  err_table errs;
} gpu_t;

typedef struct {
  char driverVersion[NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE];
  char nvmlVersion[NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE];
  int cudaVersion;
  unsigned migDelayMs;
  char hostDevRoot[4096]; /* simulated host's /dev, for the MIG access caps of new instances */
  char hostProcRoot[4096]; /* simulated host's /proc, for their capabilities entries */
  unsigned ngpus;
  err_table errs;
  gpu_t gpus[MAX_GPUS];
} system_t;

static system_t S;
static unsigned g_refcount;

/*
 * One recursive lock around every entry point: koffi's async calls run NVML on worker threads
 * (event waits, MIG create/destroy) while the main thread keeps calling in.
 */
static pthread_mutex_t g_lock;
static pthread_once_t g_lock_once = PTHREAD_ONCE_INIT;

static void lock_init(void) {
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
  pthread_mutex_init(&g_lock, &a);
  pthread_mutexattr_destroy(&a);
}

static int lock_acquire(void) {
  pthread_once(&g_lock_once, lock_init);
  pthread_mutex_lock(&g_lock);
  return 1;
}

static void lock_release(int *held) {
  if (*held) pthread_mutex_unlock(&g_lock);
}

/* Holds g_lock until the enclosing function returns. */
#define LOCKED() __attribute__((cleanup(lock_release))) int lock_held_ = lock_acquire()

/* ---- config loading ---- */

typedef struct {
  char msg[512];
} cfg_err;

static int cfail(cfg_err *ce, const char *fmt, const char *a, const char *b) {
  if (ce->msg[0] == '\0') snprintf(ce->msg, sizeof ce->msg, fmt, a ? a : "", b ? b : "");
  return -1;
}

/* Integers may be JSON numbers or strings ("0x233010DE"). */
static int get_u64(const jval *obj, const char *key, unsigned long long *out, int required, const char *where,
                   cfg_err *ce) {
  const jval *v = jget(obj, key);
  if (v == NULL || v->t == J_NULL) {
    if (required) return cfail(ce, "%s: missing required field '%s'", where, key);
    return 1;
  }
  if (v->t == J_NUM) {
    if (v->num < 0) return cfail(ce, "%s: field '%s' must not be negative", where, key);
    *out = (unsigned long long)v->inum;
    return 0;
  }
  if (v->t == J_STR) {
    char *end = NULL;
    errno = 0;
    unsigned long long x = strtoull(v->s, &end, 0);
    if (errno != 0 || end == v->s || *end != '\0')
      return cfail(ce, "%s: field '%s' is not an integer", where, key);
    *out = x;
    return 0;
  }
  return cfail(ce, "%s: field '%s' must be a number", where, key);
}

static int get_u32(const jval *obj, const char *key, unsigned *out, int required, const char *where, cfg_err *ce) {
  unsigned long long x = 0;
  int r = get_u64(obj, key, &x, required, where, ce);
  if (r == 0) {
    if (x > 0xFFFFFFFFull) return cfail(ce, "%s: field '%s' does not fit in 32 bits", where, key);
    *out = (unsigned)x;
  }
  return r;
}

static int get_str(const jval *obj, const char *key, char *out, size_t cap, int required, const char *where,
                   cfg_err *ce) {
  const jval *v = jget(obj, key);
  if (v == NULL || v->t == J_NULL) {
    if (required) return cfail(ce, "%s: missing required field '%s'", where, key);
    return 1;
  }
  if (v->t != J_STR) return cfail(ce, "%s: field '%s' must be a string", where, key);
  if (strlen(v->s) >= cap) return cfail(ce, "%s: field '%s' is too long", where, key);
  strcpy(out, v->s);
  return 0;
}

static int get_bool(const jval *obj, const char *key, int *out, const char *where, cfg_err *ce) {
  const jval *v = jget(obj, key);
  if (v == NULL || v->t == J_NULL) return 1;
  if (v->t == J_BOOL) *out = v->b;
  else if (v->t == J_NUM) *out = v->inum != 0;
  else return cfail(ce, "%s: field '%s' must be a boolean", where, key);
  return 0;
}

static int parse_code(const jval *v, nvmlReturn_t *out, const char *where, const char *key, cfg_err *ce) {
  long code = -1;
  if (v->t == J_STR) code = code_from_name(v->s);
  else if (v->t == J_NUM && v->is_int) code = (long)v->inum;
  if (code < 0) return cfail(ce, "%s: '%s' is not an NVML return code name (e.g. \"GPU_IS_LOST\")", where, key);
  *out = (nvmlReturn_t)code;
  return 0;
}

static int parse_errors(const jval *obj, err_table *t, const char *where, cfg_err *ce) {
  const jval *e = jget(obj, "errors");
  if (e == NULL || e->t == J_NULL) return 0;
  if (e->t != J_OBJ) return cfail(ce, "%s: 'errors' must be an object", where, NULL);
  for (size_t i = 0; i < e->n; i++) {
    if (t->n >= MAX_ERRS) return cfail(ce, "%s: too many injected errors", where, NULL);
    if (strlen(e->keys[i]) >= FN_NAME_MAX) return cfail(ce, "%s: function name '%s' too long", where, e->keys[i]);
    err_entry *en = &t->e[t->n];
    strcpy(en->fn, e->keys[i]);
    if (parse_code(e->items[i], &en->code, where, e->keys[i], ce) != 0) return -1;
    t->n++;
  }
  return 0;
}

static int parse_profile(const jval *p, gpu_t *g, const char *where, cfg_err *ce) {
  unsigned index = 0;
  if (p->t != J_OBJ) return cfail(ce, "%s: GI profile must be an object", where, NULL);
  if (get_u32(p, "index", &index, 1, where, ce) != 0) return -1;
  if (index >= NVML_GPU_INSTANCE_PROFILE_COUNT) return cfail(ce, "%s: GI profile index out of range", where, NULL);
  profile_t *pr = &g->profiles[index];
  if (pr->present) return cfail(ce, "%s: duplicate GI profile index", where, NULL);
  memset(pr, 0, sizeof *pr);
  pr->present = 1;
  if (get_u32(p, "id", &pr->id, 1, where, ce) != 0) return -1;
  if (get_str(p, "name", pr->name, sizeof pr->name, 1, where, ce) != 0) return -1;
  if (get_u32(p, "sliceCount", &pr->slices, 1, where, ce) != 0) return -1;
  if (get_u32(p, "instanceCount", &pr->instances, 1, where, ce) != 0) return -1;
  if (get_u32(p, "multiprocessorCount", &pr->sms, 1, where, ce) != 0) return -1;
  if (get_u32(p, "copyEngineCount", &pr->ce, 0, where, ce) < 0) return -1;
  if (get_u32(p, "decoderCount", &pr->dec, 0, where, ce) < 0) return -1;
  if (get_u32(p, "encoderCount", &pr->enc, 0, where, ce) < 0) return -1;
  if (get_u32(p, "jpegCount", &pr->jpeg, 0, where, ce) < 0) return -1;
  if (get_u32(p, "ofaCount", &pr->ofa, 0, where, ce) < 0) return -1;
  if (get_u32(p, "isP2pSupported", &pr->isP2p, 0, where, ce) < 0) return -1;
  if (get_u32(p, "capabilities", &pr->capabilities, 0, where, ce) < 0) return -1;
  if (get_u64(p, "memorySizeMB", &pr->memMB, 1, where, ce) != 0) return -1;
  const jval *pl = jget(p, "placements");
  if (pl != NULL && pl->t == J_ARR) {
    for (size_t i = 0; i < pl->n; i++) {
      if (pr->nplacements >= MAX_PLACEMENTS) return cfail(ce, "%s: too many placements", where, NULL);
      nvmlGpuInstancePlacement_t *x = &pr->placements[pr->nplacements++];
      if (get_u32(pl->items[i], "start", &x->start, 1, where, ce) != 0) return -1;
      if (get_u32(pl->items[i], "size", &x->size, 1, where, ce) != 0) return -1;
    }
  }
  return 0;
}

static const profile_t *profile_by_id(const gpu_t *g, unsigned id, int *index) {
  for (int i = 0; i < NVML_GPU_INSTANCE_PROFILE_COUNT; i++) {
    if (g->profiles[i].present && g->profiles[i].id == id) {
      if (index) *index = i;
      return &g->profiles[i];
    }
  }
  return NULL;
}

/* ---- MIG layout ---- */

/* Slice count of each NVML_COMPUTE_INSTANCE_PROFILE_* (1_SLICE .. 7_SLICE_NVL). */
static const unsigned CI_PROFILE_SLICES[NVML_COMPUTE_INSTANCE_PROFILE_COUNT] = {1, 2, 3, 4, 7, 8, 6, 1, 7};

/* The CI profile that spans a whole GPU instance of `slices` compute slices, or -1. */
static int full_ci_profile(unsigned slices) {
  for (int i = 0; i <= 6; i++)
    if (CI_PROFILE_SLICES[i] == slices) return i;
  return -1;
}

/*
 * Compute slices of CI profile `index` inside a GPU instance of `giSlices`, or 0 where that GI
 * does not offer it. As `nvidia-smi mig -lcip` lists them on A100/H100: the full-GI profile, 1c
 * and 2c everywhere they fit, and 3c and 4c in a 7-slice GI. REV1 and NVL profiles: never.
 */
static unsigned ci_profile_slices(unsigned index, unsigned giSlices) {
  if (index > 6) return 0;
  unsigned s = CI_PROFILE_SLICES[index];
  if (s > giSlices) return 0;
  if (s == giSlices || s <= 2 || (giSlices == 7 && s <= 4)) return s;
  return 0;
}

static mig_t *find_mig(gpu_t *g, unsigned giId, unsigned ciId) {
  for (unsigned i = 0; i < MAX_MIG; i++)
    if (g->migs[i].used && g->migs[i].giId == giId && g->migs[i].ciId == ciId) return &g->migs[i];
  return NULL;
}

static mig_t *free_mig_slot(gpu_t *g) {
  for (unsigned i = 0; i < MAX_MIG; i++)
    if (!g->migs[i].used) return &g->migs[i];
  return NULL;
}

static unsigned mig_count(const gpu_t *g) {
  unsigned n = 0;
  for (unsigned i = 0; i < MAX_MIG; i++) n += g->migs[i].used != 0;
  return n;
}

static unsigned ci_count(const gpu_t *g, unsigned giId) {
  unsigned n = 0;
  for (unsigned i = 0; i < MAX_MIG; i++) n += g->migs[i].used && g->migs[i].giId == giId;
  return n;
}

/* The MIG device at enumeration index `index`: used slots in (GI id, CI id) order. */
static mig_t *mig_at(gpu_t *g, unsigned index) {
  unsigned k = 0;
  for (unsigned gi = 0; gi < MAX_GI_IDS; gi++) {
    if (!g->gis[gi].used) continue;
    for (unsigned ci = 0; ci < MAX_CI_IDS; ci++) {
      mig_t *m = find_mig(g, gi, ci);
      if (m != NULL && k++ == index) return m;
    }
  }
  return NULL;
}

/*
 * Configured MIG devices name no CI profile: the only CI of a GI spans it; several CIs of one GI
 * are 1-slice CIs in CI-id order.
 */
static void assign_configured_ci_profiles(gpu_t *g) {
  for (unsigned gi = 0; gi < MAX_GI_IDS; gi++) {
    if (!g->gis[gi].used) continue;
    unsigned slices = g->profiles[g->gis[gi].profileIndex].slices;
    unsigned n = ci_count(g, gi), rank = 0;
    for (unsigned ci = 0; ci < MAX_CI_IDS; ci++) {
      mig_t *m = find_mig(g, gi, ci);
      if (m == NULL) continue;
      int full = full_ci_profile(slices);
      if (n == 1 && full >= 0) {
        m->ciProfile = (unsigned)full;
        m->ciPlacement.start = 0;
        m->ciPlacement.size = slices;
      } else {
        m->ciProfile = 0;
        m->ciPlacement.start = rank++;
        m->ciPlacement.size = 1;
      }
    }
  }
}

/* SMs of a compute instance of `slices` in a GI of profile `pr` (its share of the GI's). */
static unsigned ci_sms(const profile_t *pr, unsigned slices) {
  if (pr->slices == 0 || slices >= pr->slices) return pr->sms;
  return pr->sms * slices / pr->slices;
}

/* "MIG 3g.40gb" for a CI that spans its GI, "MIG 1c.3g.40gb" for a smaller one (nvidia-smi's names). */
static void ci_profile_name_for(const profile_t *pr, unsigned slices, char *out, size_t cap) {
  const char *base = strncmp(pr->name, "MIG ", 4) == 0 ? pr->name + 4 : pr->name;
  if (slices >= pr->slices) snprintf(out, cap, "%s", pr->name);
  else snprintf(out, cap, "MIG %uc.%.80s", slices % 100u, base); /* bounded for -Wformat-truncation */
}

static void ci_profile_name(const gpu_t *g, const mig_t *m, char *out, size_t cap) {
  ci_profile_name_for(&g->profiles[g->gis[m->giId].profileIndex], m->ciPlacement.size, out, cap);
}

/* Handle structs of one GPU: fixed, whatever instances exist. */
static void init_handles(gpu_t *g, int gpu) {
  g->handle.magic = DEV_MAGIC;
  g->handle.gpu = gpu;
  g->handle.gi = -1;
  g->handle.ci = -1;
  for (int gi = 0; gi < MAX_GI_IDS; gi++) {
    g->giHandles[gi].magic = GI_MAGIC;
    g->giHandles[gi].gpu = gpu;
    g->giHandles[gi].gi = gi;
    for (int ci = 0; ci < MAX_CI_IDS; ci++) {
      struct nvmlDevice_st *d = &g->migHandles[gi][ci];
      d->magic = DEV_MAGIC;
      d->gpu = gpu;
      d->gi = gi;
      d->ci = ci;
      struct nvmlComputeInstance_st *c = &g->ciHandles[gi][ci];
      c->magic = CI_MAGIC;
      c->gpu = gpu;
      c->gi = gi;
      c->ci = ci;
    }
  }
}

static int parse_gpu(const jval *root, const jval *gv, unsigned gi, cfg_err *ce) {
  char where[64];
  snprintf(where, sizeof where, "gpus[%u]", gi);
  if (gv->t != J_OBJ) return cfail(ce, "%s: must be an object", where, NULL);
  gpu_t *g = &S.gpus[gi];
  init_handles(g, (int)gi);
  if (get_str(gv, "name", g->name, sizeof g->name, 1, where, ce) != 0) return -1;
  if (get_str(gv, "uuid", g->uuid, sizeof g->uuid, 1, where, ce) != 0) return -1;
  int r = get_u32(gv, "brand", &g->brand, 0, where, ce);
  if (r < 0) return -1;
  g->hasBrand = r == 0;
  r = get_u32(gv, "architecture", &g->arch, 0, where, ce);
  if (r < 0) return -1;
  g->hasArch = r == 0;
  const jval *cc = jget(gv, "computeCapability");
  unsigned ccMajor = 0, ccMinor = 0;
  if (cc == NULL || get_u32(cc, "major", &ccMajor, 1, where, ce) != 0 ||
      get_u32(cc, "minor", &ccMinor, 1, where, ce) != 0)
    return cfail(ce, "%s: 'computeCapability' {major, minor} is required", where, NULL);
  g->ccMajor = (int)ccMajor;
  g->ccMinor = (int)ccMinor;
  const jval *mem = jget(gv, "memory");
  if (mem == NULL || get_u64(mem, "total", &g->memTotal, 1, where, ce) != 0)
    return cfail(ce, "%s: 'memory.total' is required", where, NULL);
  if (get_u64(mem, "used", &g->memUsed, 0, where, ce) < 0) return -1;
  if (g->memUsed > g->memTotal) return cfail(ce, "%s: memory.used exceeds memory.total", where, NULL);
  if (get_u32(gv, "minor", &g->minor, 1, where, ce) != 0) return -1;
  const jval *pci = jget(gv, "pci");
  if (pci == NULL) return cfail(ce, "%s: 'pci' is required", where, NULL);
  if (get_u32(pci, "domain", &g->domain, 0, where, ce) < 0) return -1;
  if (get_u32(pci, "bus", &g->bus, 1, where, ce) != 0) return -1;
  if (get_u32(pci, "device", &g->device, 1, where, ce) != 0) return -1;
  if (get_u32(pci, "pciDeviceId", &g->pciDeviceId, 1, where, ce) != 0) return -1;
  if (get_u32(pci, "pciSubSystemId", &g->pciSubSystemId, 0, where, ce) < 0) return -1;
  r = get_u32(gv, "numaNode", &g->numa, 0, where, ce);
  if (r < 0) return -1;
  g->hasNuma = r == 0;
  r = get_u32(gv, "addressingMode", &g->addressingMode, 0, where, ce);
  if (r < 0) return -1;
  g->hasAddressingMode = r == 0;
  r = get_u32(gv, "multiprocessorCount", &g->sms, 0, where, ce);
  if (r < 0) return -1;
  g->hasSms = r == 0;
  if (get_bool(gv, "migCapable", &g->migCapable, where, ce) < 0) return -1;
  if (get_bool(gv, "lost", &g->lost, where, ce) < 0) return -1;
  if (get_u32(gv, "virtualizationMode", &g->virtMode, 0, where, ce) < 0) return -1;
  g->supportedEvents = FAKE_DEFAULT_EVENT_TYPES;
  if (get_u64(gv, "supportedEventTypes", &g->supportedEvents, 0, where, ce) < 0) return -1;
  g->maxMig = g->migCapable ? 7 : 0;
  if (get_u32(gv, "maxMigDeviceCount", &g->maxMig, 0, where, ce) < 0) return -1;
  if (g->maxMig > MAX_MIG) return cfail(ce, "%s: maxMigDeviceCount too large", where, NULL);
  const jval *mm = jget(gv, "migMode");
  if (mm != NULL && mm->t == J_OBJ) {
    if (get_u32(mm, "current", &g->migCurrent, 0, where, ce) < 0) return -1;
    if (get_u32(mm, "pending", &g->migPending, 0, where, ce) < 0) return -1;
  }
  const jval *profs = jget(gv, "giProfiles");
  if (profs != NULL && profs->t == J_STR) {
    const jval *tables = jget(root, "giProfileTables");
    const jval *t = jget(tables, profs->s);
    if (t == NULL) return cfail(ce, "%s: unknown giProfileTables entry '%s'", where, profs->s);
    profs = t;
  }
  if (profs != NULL && profs->t == J_ARR) {
    for (size_t i = 0; i < profs->n; i++)
      if (parse_profile(profs->items[i], g, where, ce) != 0) return -1;
  } else if (profs != NULL && profs->t != J_NULL) {
    return cfail(ce, "%s: 'giProfiles' must be an array or a giProfileTables name", where, NULL);
  }
  const jval *migs = jget(gv, "migDevices");
  if (migs != NULL && migs->t == J_ARR) {
    if (migs->n > g->maxMig) return cfail(ce, "%s: more migDevices than maxMigDeviceCount", where, NULL);
    for (size_t i = 0; i < migs->n; i++) {
      const jval *mv = migs->items[i];
      char mwhere[96];
      snprintf(mwhere, sizeof mwhere, "%s.migDevices[%u]", where, (unsigned)i);
      mig_t m;
      memset(&m, 0, sizeof m);
      unsigned profileId = 0;
      nvmlGpuInstancePlacement_t placement;
      if (get_str(mv, "uuid", m.uuid, sizeof m.uuid, 1, mwhere, ce) != 0) return -1;
      if (get_u32(mv, "gpuInstanceId", &m.giId, 1, mwhere, ce) != 0) return -1;
      if (get_u32(mv, "computeInstanceId", &m.ciId, 1, mwhere, ce) != 0) return -1;
      if (get_u32(mv, "profileId", &profileId, 1, mwhere, ce) != 0) return -1;
      if (m.giId >= MAX_GI_IDS) return cfail(ce, "%s: gpuInstanceId must be below 15", mwhere, NULL);
      if (m.ciId >= MAX_CI_IDS) return cfail(ce, "%s: computeInstanceId must be below 8", mwhere, NULL);
      int profileIndex = 0;
      const profile_t *pr = profile_by_id(g, profileId, &profileIndex);
      if (pr == NULL) return cfail(ce, "%s: profileId is not in this GPU's giProfiles", mwhere, NULL);
      const jval *pl = jget(mv, "placement");
      if (pl == NULL || get_u32(pl, "start", &placement.start, 1, mwhere, ce) != 0 ||
          get_u32(pl, "size", &placement.size, 1, mwhere, ce) != 0)
        return cfail(ce, "%s: 'placement' {start, size} is required", mwhere, NULL);
      gi_t *gi = &g->gis[m.giId];
      if (gi->used && (gi->profileId != profileId || gi->placement.start != placement.start ||
                       gi->placement.size != placement.size))
        return cfail(ce, "%s: another entry of this gpuInstanceId has another profile or placement", mwhere,
                     NULL);
      if (find_mig(g, m.giId, m.ciId) != NULL)
        return cfail(ce, "%s: duplicate gpuInstanceId/computeInstanceId", mwhere, NULL);
      gi->used = 1;
      gi->profileId = profileId;
      gi->profileIndex = profileIndex;
      gi->placement = placement;
      m.memTotal = pr->memMB * 1024ull * 1024ull;
      const jval *mmem = jget(mv, "memory");
      if (mmem != NULL) {
        if (get_u64(mmem, "total", &m.memTotal, 0, mwhere, ce) < 0) return -1;
        if (get_u64(mmem, "used", &m.memUsed, 0, mwhere, ce) < 0) return -1;
      }
      if (get_bool(mv, "busy", &m.busy, mwhere, ce) < 0) return -1;
      if (parse_errors(mv, &m.errs, mwhere, ce) != 0) return -1;
      mig_t *slot = free_mig_slot(g);
      if (slot == NULL) return cfail(ce, "%s: too many MIG devices", mwhere, NULL);
      *slot = m;
      slot->used = 1;
    }
    assign_configured_ci_profiles(g);
  }
  return parse_errors(gv, &g->errs, where, ce);
}

static int load_config(cfg_err *ce, nvmlReturn_t *initError) {
  const char *path = getenv("FAKE_NVML_CONFIG");
  if (path == NULL || *path == '\0') return cfail(ce, "FAKE_NVML_CONFIG is not set", NULL, NULL);
  FILE *f = fopen(path, "rb");
  if (f == NULL) return cfail(ce, "cannot open %s: %s", path, strerror(errno));
  char *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len + 4096 + 1 > cap) {
      cap = cap ? cap * 2 : 65536;
      char *nb = realloc(buf, cap);
      if (nb == NULL) {
        free(buf);
        fclose(f);
        return cfail(ce, "out of memory reading %s", path, NULL);
      }
      buf = nb;
    }
    size_t k = fread(buf + len, 1, cap - len - 1, f);
    len += k;
    if (k == 0) break;
  }
  int readErr = ferror(f);
  fclose(f);
  if (readErr) {
    free(buf);
    return cfail(ce, "cannot read %s", path, NULL);
  }
  buf[len] = '\0';
  jparser ps = {buf, buf, {0}};
  jval *root = jparse_value(&ps, 0);
  if (root != NULL) {
    jskip(&ps);
    if (*ps.p != '\0') {
      jfail(&ps, "trailing characters");
      jfree(root);
      root = NULL;
    }
  }
  if (root == NULL) {
    char msg[300];
    snprintf(msg, sizeof msg, "%s", ps.err);
    free(buf);
    return cfail(ce, "invalid JSON in %s: %s", path, msg);
  }
  free(buf);
  int rc = -1;
  memset(&S, 0, sizeof S);
  if (root->t != J_OBJ) {
    cfail(ce, "%s: top level must be an object", path, NULL);
    goto out;
  }
  const jval *ie = jget(root, "initError");
  if (ie != NULL && ie->t != J_NULL) {
    if (parse_code(ie, initError, "config", "initError", ce) != 0) goto out;
    rc = 0;
    goto out;
  }
  if (get_str(root, "driverVersion", S.driverVersion, sizeof S.driverVersion, 1, "config", ce) != 0) goto out;
  unsigned cuda = 0;
  if (get_u32(root, "cudaDriverVersion", &cuda, 1, "config", ce) != 0) goto out;
  S.cudaVersion = (int)cuda;
  if (get_str(root, "nvmlVersion", S.nvmlVersion, sizeof S.nvmlVersion, 0, "config", ce) < 0) goto out;
  if (S.nvmlVersion[0] == '\0') {
    char tmp[sizeof S.nvmlVersion + 16];
    snprintf(tmp, sizeof tmp, "%d.%s", S.cudaVersion / 1000, S.driverVersion);
    snprintf(S.nvmlVersion, sizeof S.nvmlVersion, "%.*s", (int)(sizeof S.nvmlVersion - 1), tmp);
  }
  if (parse_errors(root, &S.errs, "config", ce) != 0) goto out;
  if (get_u32(root, "migOperationDelayMs", &S.migDelayMs, 0, "config", ce) < 0) goto out;
  if (get_str(root, "hostDevRoot", S.hostDevRoot, sizeof S.hostDevRoot, 0, "config", ce) < 0) goto out;
  if (get_str(root, "hostProcRoot", S.hostProcRoot, sizeof S.hostProcRoot, 0, "config", ce) < 0) goto out;
  const jval *gpus = jget(root, "gpus");
  if (gpus != NULL && gpus->t != J_ARR) {
    cfail(ce, "config: 'gpus' must be an array", NULL, NULL);
    goto out;
  }
  if (gpus != NULL) {
    if (gpus->n > MAX_GPUS) {
      cfail(ce, "config: too many GPUs", NULL, NULL);
      goto out;
    }
    for (size_t i = 0; i < gpus->n; i++) {
      if (parse_gpu(root, gpus->items[i], (unsigned)i, ce) != 0) goto out;
      S.ngpus++;
    }
  }
  rc = 0;
out:
  jfree(root);
  if (rc != 0) memset(&S, 0, sizeof S);
  return rc;
}

/* ---- call prologues ---- */

static int err_lookup(const err_table *t, const char *fn, nvmlReturn_t *code) {
  for (unsigned i = 0; i < t->n; i++) {
    if (strcmp(t->e[i].fn, fn) == 0) {
      *code = t->e[i].code;
      return 1;
    }
  }
  for (unsigned i = 0; i < t->n; i++) {
    if (strcmp(t->e[i].fn, "*") == 0) {
      *code = t->e[i].code;
      return 1;
    }
  }
  return 0;
}

static nvmlReturn_t sys_enter(const char *fn) {
  if (g_refcount == 0) return NVML_ERROR_UNINITIALIZED;
  nvmlReturn_t code;
  if (err_lookup(&S.errs, fn, &code)) return code;
  return NVML_SUCCESS;
}

/* Is `p` (an object of `size` bytes) inside S.gpus? Checked before any handle is read. */
static int in_gpus(const void *p, size_t size) {
  uintptr_t a = (uintptr_t)p;
  return a >= (uintptr_t)&S.gpus[0] && a + size <= (uintptr_t)&S.gpus[MAX_GPUS];
}

/* Validates a device handle without dereferencing memory outside our arrays. */
static int resolve(nvmlDevice_t d, gpu_t **g, mig_t **m) {
  if (d == NULL || !in_gpus(d, sizeof *d)) return 0;
  if (d->magic != DEV_MAGIC || d->gpu < 0 || (unsigned)d->gpu >= S.ngpus) return 0;
  gpu_t *gg = &S.gpus[d->gpu];
  if (d->gi < 0) {
    if (d != &gg->handle) return 0;
    *g = gg;
    *m = NULL;
    return 1;
  }
  if (d->gi >= MAX_GI_IDS || d->ci < 0 || d->ci >= MAX_CI_IDS || d != &gg->migHandles[d->gi][d->ci]) return 0;
  mig_t *mm = find_mig(gg, (unsigned)d->gi, (unsigned)d->ci);
  if (mm == NULL) return 0; /* destroyed */
  *g = gg;
  *m = mm;
  return 1;
}

/* A GPU-instance handle of an existing GI. */
static int resolve_gi(nvmlGpuInstance_t h, gpu_t **g, gi_t **gi) {
  if (h == NULL || !in_gpus(h, sizeof *h)) return 0;
  if (h->magic != GI_MAGIC || h->gpu < 0 || (unsigned)h->gpu >= S.ngpus) return 0;
  gpu_t *gg = &S.gpus[h->gpu];
  if (h->gi < 0 || h->gi >= MAX_GI_IDS || h != &gg->giHandles[h->gi] || !gg->gis[h->gi].used) return 0;
  *g = gg;
  *gi = &gg->gis[h->gi];
  return 1;
}

/* A compute-instance handle of an existing CI. */
static int resolve_ci(nvmlComputeInstance_t h, gpu_t **g, mig_t **m) {
  if (h == NULL || !in_gpus(h, sizeof *h)) return 0;
  if (h->magic != CI_MAGIC || h->gpu < 0 || (unsigned)h->gpu >= S.ngpus) return 0;
  gpu_t *gg = &S.gpus[h->gpu];
  if (h->gi < 0 || h->gi >= MAX_GI_IDS || h->ci < 0 || h->ci >= MAX_CI_IDS || h != &gg->ciHandles[h->gi][h->ci])
    return 0;
  mig_t *mm = find_mig(gg, (unsigned)h->gi, (unsigned)h->ci);
  if (mm == NULL) return 0;
  *g = gg;
  *m = mm;
  return 1;
}

/* Injected errors: the MIG device's table (if any), then the GPU's, then the system's. */
static int injected(const char *fn, const gpu_t *g, const mig_t *m, nvmlReturn_t *code) {
  if (m != NULL && err_lookup(&m->errs, fn, code)) return 1;
  if (g != NULL && err_lookup(&g->errs, fn, code)) return 1;
  return err_lookup(&S.errs, fn, code);
}

static nvmlReturn_t dev_enter(const char *fn, nvmlDevice_t d, gpu_t **g, mig_t **m) {
  if (g_refcount == 0) return NVML_ERROR_UNINITIALIZED;
  if (!resolve(d, g, m)) return NVML_ERROR_INVALID_ARGUMENT;
  if ((*g)->lost) return NVML_ERROR_GPU_IS_LOST;
  nvmlReturn_t code;
  if (injected(fn, *g, *m, &code)) return code;
  return NVML_SUCCESS;
}

#define DEV_ENTER(fn, dev)                         \
  LOCKED();                                        \
  gpu_t *g = NULL;                                 \
  mig_t *m = NULL;                                 \
  do {                                             \
    nvmlReturn_t r_ = dev_enter(fn, dev, &g, &m); \
    if (r_ != NVML_SUCCESS) return r_;             \
  } while (0)

/* Entry of the functions taking a GPU-instance handle. */
#define GI_ENTER(fn, h)                                        \
  LOCKED();                                                    \
  gpu_t *g = NULL;                                             \
  gi_t *gi = NULL;                                             \
  do {                                                         \
    nvmlReturn_t c_;                                           \
    if (g_refcount == 0) return NVML_ERROR_UNINITIALIZED;      \
    if (!resolve_gi(h, &g, &gi)) return NVML_ERROR_INVALID_ARGUMENT; \
    if (g->lost) return NVML_ERROR_GPU_IS_LOST;                \
    if (injected(fn, g, NULL, &c_)) return c_;                 \
  } while (0)

/* Entry of the functions taking a compute-instance handle. */
#define CI_ENTER(fn, h)                                        \
  LOCKED();                                                    \
  gpu_t *g = NULL;                                             \
  mig_t *m = NULL;                                             \
  do {                                                         \
    nvmlReturn_t c_;                                           \
    if (g_refcount == 0) return NVML_ERROR_UNINITIALIZED;      \
    if (!resolve_ci(h, &g, &m)) return NVML_ERROR_INVALID_ARGUMENT; \
    if (g->lost) return NVML_ERROR_GPU_IS_LOST;                \
    if (injected(fn, g, m, &c_)) return c_;                    \
  } while (0)

/* Parent-only queries on a MIG device handle answer INVALID_ARGUMENT (see README.md). */
#define NOT_ON_MIG() \
  if (m != NULL) return NVML_ERROR_INVALID_ARGUMENT

static nvmlReturn_t copy_str(char *buf, unsigned length, const char *s) {
  if (buf == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  size_t need = strlen(s) + 1;
  if (length < need) return NVML_ERROR_INSUFFICIENT_SIZE;
  memcpy(buf, s, need);
  return NVML_SUCCESS;
}

/* ------------------------------------------------------------------------------------------ */
/* Exported API                                                                               */
/* ------------------------------------------------------------------------------------------ */

EXPORT const char *nvmlErrorString(nvmlReturn_t result) {
  for (size_t i = 0; i < NCODES; i++)
    if (CODES[i].code == result) return CODES[i].text;
  return "Unknown Error";
}

/* Event sets: what each registered, and how far into $FAKE_NVML_EVENTS it has read. */
#define MAX_EVENT_SETS 16
#define EVENT_SET_MAGIC 0x45564e54u /* "EVNT" */
struct nvmlEventSet_st {
  unsigned magic;
  long offset;
  unsigned long long mask[MAX_GPUS];
};
static struct nvmlEventSet_st g_sets[MAX_EVENT_SETS];

/* ---- files: the config, and the MIG state that outlives a process ---- */

/* Identity of a file, to tell that it changed (a rename gives a new inode). */
typedef struct {
  int exists;
  dev_t dev;
  ino_t ino;
  off_t size;
  struct timespec mtime;
} file_id;

static file_id file_identity(const char *path) {
  file_id id;
  memset(&id, 0, sizeof id);
  struct stat st;
  if (path != NULL && *path != '\0' && stat(path, &st) == 0) {
    id.exists = 1;
    id.dev = st.st_dev;
    id.ino = st.st_ino;
    id.size = st.st_size;
    id.mtime = st.st_mtim;
  }
  return id;
}

static int same_file(const file_id *a, const file_id *b) {
  return a->exists == b->exists && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
         a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/* What S was loaded from: a later init (or MIG change) reloads when either file changed. */
static file_id g_config_id, g_state_id;

/*
 * MIG instances live in the kernel on a real node: they outlive the process that made them and
 * every NVML user sees them. Here they live in a JSON file, $FAKE_NVML_STATE or else
 * "$FAKE_NVML_CONFIG.mig-state", which holds the whole MIG layout of each GPU that has had a
 * create or destroy (README.md, "MIG instances").
 */
static const char *state_path(char *buf, size_t cap) {
  const char *p = getenv("FAKE_NVML_STATE");
  if (p != NULL && *p != '\0') return p;
  const char *c = getenv("FAKE_NVML_CONFIG");
  if (c == NULL || *c == '\0') return NULL;
  snprintf(buf, cap, "%s.mig-state", c);
  return buf;
}

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return NULL;
  char *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len + 4096 + 1 > cap) {
      cap = cap ? cap * 2 : 16384;
      char *nb = realloc(buf, cap);
      if (nb == NULL) {
        free(buf);
        fclose(f);
        return NULL;
      }
      buf = nb;
    }
    size_t k = fread(buf + len, 1, cap - len - 1, f);
    len += k;
    if (k == 0) break;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    return NULL;
  }
  buf[len] = '\0';
  return buf;
}

/* One GPU's layout from the state file into `gis`/`migs`; 0, or -1 with ce set. */
static int parse_state_gpu(const jval *gv, gpu_t *g, gi_t *gis, mig_t *migs, cfg_err *ce) {
  const char *where = g->uuid;
  const jval *list = jget(gv, "gpuInstances");
  if (list == NULL || list->t != J_ARR) return cfail(ce, "%s: 'gpuInstances' must be an array", where, NULL);
  unsigned nm = 0;
  for (size_t i = 0; i < list->n; i++) {
    const jval *iv = list->items[i];
    unsigned id = 0, profileId = 0;
    nvmlGpuInstancePlacement_t pl;
    const jval *plv = jget(iv, "placement");
    if (get_u32(iv, "id", &id, 1, where, ce) != 0 || get_u32(iv, "profileId", &profileId, 1, where, ce) != 0 ||
        plv == NULL || get_u32(plv, "start", &pl.start, 1, where, ce) != 0 ||
        get_u32(plv, "size", &pl.size, 1, where, ce) != 0)
      return cfail(ce, "%s: a GPU instance needs id, profileId and placement", where, NULL);
    int index = 0;
    if (id >= MAX_GI_IDS || gis[id].used) return cfail(ce, "%s: bad or duplicate GPU instance id", where, NULL);
    if (profile_by_id(g, profileId, &index) == NULL)
      return cfail(ce, "%s: GPU instance profile id not in this GPU's table", where, NULL);
    gis[id].used = 1;
    gis[id].profileId = profileId;
    gis[id].profileIndex = index;
    gis[id].placement = pl;
    const jval *cis = jget(iv, "computeInstances");
    if (cis == NULL || cis->t != J_ARR) return cfail(ce, "%s: 'computeInstances' must be an array", where, NULL);
    for (size_t j = 0; j < cis->n; j++) {
      const jval *cv = cis->items[j];
      if (nm >= MAX_MIG) return cfail(ce, "%s: too many compute instances", where, NULL);
      mig_t *m = &migs[nm];
      memset(m, 0, sizeof *m);
      const jval *cpl = jget(cv, "placement");
      if (get_u32(cv, "id", &m->ciId, 1, where, ce) != 0 ||
          get_u32(cv, "profileId", &m->ciProfile, 1, where, ce) != 0 || cpl == NULL ||
          get_u32(cpl, "start", &m->ciPlacement.start, 1, where, ce) != 0 ||
          get_u32(cpl, "size", &m->ciPlacement.size, 1, where, ce) != 0 ||
          get_str(cv, "uuid", m->uuid, sizeof m->uuid, 1, where, ce) != 0 ||
          get_bool(cv, "busy", &m->busy, where, ce) < 0)
        return cfail(ce, "%s: a compute instance needs id, profileId, placement and uuid", where, NULL);
      if (m->ciId >= MAX_CI_IDS || m->ciProfile >= NVML_COMPUTE_INSTANCE_PROFILE_COUNT)
        return cfail(ce, "%s: compute instance id or profile out of range", where, NULL);
      for (unsigned k = 0; k < nm; k++)
        if (migs[k].giId == id && migs[k].ciId == m->ciId)
          return cfail(ce, "%s: duplicate compute instance id", where, NULL);
      m->used = 1;
      m->giId = id;
      nm++;
    }
  }
  return 0;
}

/*
 * Replaces the MIG layout of each GPU the state file lists (by UUID) with the file's. A MIG device
 * the config also lists keeps the config's memory and injected errors. A file that does not parse
 * is reported on stderr and ignored, as is a GPU whose entry does not fit its profile table.
 */
static void apply_state(void) {
  char pbuf[4096];
  const char *path = state_path(pbuf, sizeof pbuf);
  if (path == NULL) return;
  char *text = read_text(path);
  if (text == NULL) return;
  jparser ps = {text, text, {0}};
  jval *root = jparse_value(&ps, 0);
  if (root == NULL || root->t != J_OBJ) {
    fprintf(stderr, "fake-nvml: MIG state %s ignored: %s\n", path, root == NULL ? ps.err : "not an object");
    jfree(root);
    free(text);
    return;
  }
  const jval *gpus = jget(root, "gpus");
  static gi_t gis[MAX_GI_IDS];
  static mig_t migs[MAX_MIG];
  for (size_t i = 0; gpus != NULL && gpus->t == J_ARR && i < gpus->n; i++) {
    const jval *uv = jget(gpus->items[i], "uuid");
    if (uv == NULL || uv->t != J_STR) continue;
    gpu_t *g = NULL;
    for (unsigned k = 0; k < S.ngpus && g == NULL; k++)
      if (strcmp(S.gpus[k].uuid, uv->s) == 0) g = &S.gpus[k];
    if (g == NULL) continue; /* a GPU the config no longer has */
    memset(gis, 0, sizeof gis);
    memset(migs, 0, sizeof migs);
    cfg_err ce;
    memset(&ce, 0, sizeof ce);
    if (parse_state_gpu(gpus->items[i], g, gis, migs, &ce) != 0) {
      fprintf(stderr, "fake-nvml: MIG state %s: GPU ignored: %s\n", path, ce.msg);
      continue;
    }
    for (unsigned k = 0; k < MAX_MIG; k++) {
      mig_t *m = &migs[k];
      if (!m->used) continue;
      const profile_t *pr = &g->profiles[gis[m->giId].profileIndex];
      m->memTotal = pr->memMB * 1024ull * 1024ull;
      for (unsigned j = 0; j < MAX_MIG; j++) {
        const mig_t *old = &g->migs[j];
        if (old->used && strcmp(old->uuid, m->uuid) == 0) {
          m->memTotal = old->memTotal;
          m->memUsed = old->memUsed;
          m->errs = old->errs;
          break;
        }
      }
    }
    memcpy(g->gis, gis, sizeof gis);
    memcpy(g->migs, migs, sizeof migs);
    /* MIG mode set through nvmlDeviceSetMigMode (absent from older state files). */
    const jval *mode = jget(gpus->items[i], "migMode");
    unsigned cur = g->migCurrent, pend = g->migPending;
    if (mode != NULL && get_u32(mode, "current", &cur, 0, g->uuid, &ce) == 0 &&
        get_u32(mode, "pending", &pend, 0, g->uuid, &ce) == 0 && cur <= 1 && pend <= 1) {
      g->migCurrent = cur;
      g->migPending = pend;
    }
    g->stateful = 1;
  }
  jfree(root);
  free(text);
}

static void put_json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
    else if (c < 0x20) fprintf(f, "\\u%04x", c);
    else fputc(c, f);
  }
  fputc('"', f);
}

/* Writes the layout of every GPU that has one in the state: a temporary file renamed into place. */
static void write_state(void) {
  char pbuf[4096], tmp[4200];
  const char *path = state_path(pbuf, sizeof pbuf);
  if (path == NULL) return;
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  FILE *f = fopen(tmp, "w");
  if (f == NULL) {
    fprintf(stderr, "fake-nvml: cannot write MIG state %s: %s\n", tmp, strerror(errno));
    return;
  }
  fprintf(f, "{\n  \"version\": 1,\n  \"gpus\": [");
  const char *gsep = "";
  for (unsigned k = 0; k < S.ngpus; k++) {
    gpu_t *g = &S.gpus[k];
    if (!g->stateful) continue;
    fprintf(f, "%s\n    {\n      \"uuid\": ", gsep);
    put_json_str(f, g->uuid);
    fprintf(f, ",\n      \"migMode\": {\"current\": %u, \"pending\": %u}", g->migCurrent, g->migPending);
    fprintf(f, ",\n      \"gpuInstances\": [");
    const char *isep = "";
    for (unsigned id = 0; id < MAX_GI_IDS; id++) {
      const gi_t *gi = &g->gis[id];
      if (!gi->used) continue;
      fprintf(f, "%s\n        {\"id\": %u, \"profileId\": %u, \"placement\": {\"start\": %u, \"size\": %u}, "
                 "\"computeInstances\": [",
              isep, id, gi->profileId, gi->placement.start, gi->placement.size);
      const char *csep = "";
      for (unsigned ci = 0; ci < MAX_CI_IDS; ci++) {
        const mig_t *m = find_mig(g, id, ci);
        if (m == NULL) continue;
        fprintf(f, "%s\n          {\"id\": %u, \"profileId\": %u, \"placement\": {\"start\": %u, \"size\": %u}, \"uuid\": ",
                csep, ci, m->ciProfile, m->ciPlacement.start, m->ciPlacement.size);
        put_json_str(f, m->uuid);
        fprintf(f, ", \"busy\": %s}", m->busy ? "true" : "false");
        csep = ",";
      }
      fprintf(f, "%s]}", *csep ? "\n        " : "");
      isep = ",";
    }
    fprintf(f, "%s]\n    }", *isep ? "\n      " : "");
    gsep = ",";
  }
  fprintf(f, "%s]\n}\n", *gsep ? "\n  " : "");
  int bad = ferror(f);
  bad |= fflush(f) != 0 || fsync(fileno(f)) != 0;
  bad |= fclose(f) != 0;
  if (bad || rename(tmp, path) != 0) {
    fprintf(stderr, "fake-nvml: cannot write MIG state %s: %s\n", path, strerror(errno));
    unlink(tmp);
    return;
  }
  g_state_id = file_identity(path);
}

/* Cross-process lock around read-modify-write of the state file (flock on "<state>.lock"). */
static int state_lock(void) {
  char pbuf[4096], lpath[4200];
  const char *path = state_path(pbuf, sizeof pbuf);
  if (path == NULL) return -1;
  snprintf(lpath, sizeof lpath, "%s.lock", path);
  int fd = open(lpath, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd >= 0 && flock(fd, LOCK_EX) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static void state_unlock(int fd) {
  if (fd < 0) return;
  flock(fd, LOCK_UN);
  close(fd);
}

/* The config, then the MIG state over it; records both files' identities on success. */
static int load_all(cfg_err *ce, nvmlReturn_t *initError) {
  char pbuf[4096];
  file_id cid = file_identity(getenv("FAKE_NVML_CONFIG"));
  file_id sid = file_identity(state_path(pbuf, sizeof pbuf));
  if (load_config(ce, initError) != 0) return -1;
  if (*initError != NVML_SUCCESS) return 0;
  apply_state();
  g_config_id = cid;
  g_state_id = sid;
  return 0;
}

/* Re-reads a changed config or MIG state (lock held); a bad config keeps the previous state. */
static void reload_if_changed(void) {
  char pbuf[4096];
  file_id cid = file_identity(getenv("FAKE_NVML_CONFIG"));
  file_id sid = file_identity(state_path(pbuf, sizeof pbuf));
  if (same_file(&cid, &g_config_id) && same_file(&sid, &g_state_id)) return;
  static system_t previous;
  previous = S;
  cfg_err ce;
  memset(&ce, 0, sizeof ce);
  nvmlReturn_t initError = NVML_SUCCESS;
  if (load_all(&ce, &initError) != 0 || initError != NVML_SUCCESS) {
    fprintf(stderr, "fake-nvml: reload ignored: %s\n", ce.msg[0] ? ce.msg : "initError set");
    S = previous;
  }
}

/* Appends nvmlEventMigConfigChange for GPU `g` to $FAKE_NVML_EVENTS, as real NVML reports one. */
static void emit_mig_change(const gpu_t *g) {
  const char *path = getenv("FAKE_NVML_EVENTS");
  if (path == NULL || *path == '\0') return;
  char line[64];
  int n = snprintf(line, sizeof line, "%d 0x100 0\n", (int)(g - S.gpus));
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return;
  if (write(fd, line, (size_t)n) != n) fprintf(stderr, "fake-nvml: cannot append to %s\n", path);
  close(fd);
}

/*
 * MIG create/destroy run as: [optional delay, unlocked] lock; flock the state file; reload what
 * other processes changed; the operation; on success write the state and append the event.
 */
static int mutation_begin(void) {
  unsigned ms = S.migDelayMs; /* racy read of a setting, on purpose: the delay runs unlocked */
  if (ms > 0) {
    struct timespec d = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&d, NULL);
  }
  lock_acquire();
  if (g_refcount == 0) return -1;
  int fd = state_lock();
  reload_if_changed();
  return fd;
}

static void mutation_end(int fd, gpu_t *touched) {
  if (touched != NULL) {
    touched->stateful = 1;
    write_state();
    emit_mig_change(touched);
  }
  state_unlock(fd);
  pthread_mutex_unlock(&g_lock);
}

EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
  (void)flags;
  LOCKED();
  if (g_refcount > 0) {
    g_refcount++;
    reload_if_changed();
    return NVML_SUCCESS;
  }
  cfg_err ce;
  memset(&ce, 0, sizeof ce);
  nvmlReturn_t initError = NVML_SUCCESS;
  nvmlReturn_t rc = NVML_SUCCESS;
  if (load_all(&ce, &initError) != 0) {
    fprintf(stderr, "fake-nvml: %s\n", ce.msg);
    rc = (getenv("FAKE_NVML_CONFIG") == NULL || strstr(ce.msg, "cannot ") == ce.msg) ? NVML_ERROR_LIBRARY_NOT_FOUND
                                                                                     : NVML_ERROR_UNKNOWN;
  } else if (initError != NVML_SUCCESS) {
    rc = initError;
    memset(&S, 0, sizeof S);
  } else {
    g_refcount = 1;
  }
  return rc;
}

EXPORT nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }

EXPORT nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }

EXPORT nvmlReturn_t nvmlShutdown(void) {
  LOCKED();
  if (g_refcount == 0) return NVML_ERROR_UNINITIALIZED;
  if (--g_refcount == 0) {
    memset(&S, 0, sizeof S);
    memset(g_sets, 0, sizeof g_sets);
  }
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
  LOCKED();
  nvmlReturn_t r = sys_enter("nvmlSystemGetDriverVersion");
  if (r != NVML_SUCCESS) return r;
  return copy_str(version, length, S.driverVersion);
}

EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
  LOCKED();
  nvmlReturn_t r = sys_enter("nvmlSystemGetNVMLVersion");
  if (r != NVML_SUCCESS) return r;
  return copy_str(version, length, S.nvmlVersion);
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *cudaDriverVersion) {
  LOCKED();
  nvmlReturn_t r = sys_enter("nvmlSystemGetCudaDriverVersion");
  if (r != NVML_SUCCESS) return r;
  if (cudaDriverVersion == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  *cudaDriverVersion = S.cudaVersion;
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *cudaDriverVersion) {
  LOCKED();
  nvmlReturn_t r = sys_enter("nvmlSystemGetCudaDriverVersion_v2");
  if (r != NVML_SUCCESS) return r;
  if (cudaDriverVersion == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  *cudaDriverVersion = S.cudaVersion;
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount) {
  LOCKED();
  nvmlReturn_t r = sys_enter("nvmlDeviceGetCount_v2");
  if (r != NVML_SUCCESS) return r;
  if (deviceCount == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  *deviceCount = S.ngpus;
  return NVML_SUCCESS;
}

static nvmlReturn_t handle_out(const char *fn, gpu_t *g, nvmlDevice_t *device) {
  nvmlReturn_t code;
  if (err_lookup(&g->errs, fn, &code)) return code;
  *device = &g->handle;
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
  LOCKED();
  nvmlReturn_t r = sys_enter("nvmlDeviceGetHandleByIndex_v2");
  if (r != NVML_SUCCESS) return r;
  if (device == NULL || index >= S.ngpus) return NVML_ERROR_INVALID_ARGUMENT;
  return handle_out("nvmlDeviceGetHandleByIndex_v2", &S.gpus[index], device);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
  LOCKED();
  nvmlReturn_t r = sys_enter("nvmlDeviceGetHandleByUUID");
  if (r != NVML_SUCCESS) return r;
  if (uuid == NULL || device == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  for (unsigned i = 0; i < S.ngpus; i++) {
    gpu_t *g = &S.gpus[i];
    if (strcmp(g->uuid, uuid) == 0) return handle_out("nvmlDeviceGetHandleByUUID", g, device);
    for (unsigned j = 0; j < MAX_MIG; j++) {
      const mig_t *m = &g->migs[j];
      if (m->used && strcmp(m->uuid, uuid) == 0) {
        *device = &g->migHandles[m->giId][m->ciId];
        return NVML_SUCCESS;
      }
    }
  }
  return NVML_ERROR_NOT_FOUND;
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *pciBusId, nvmlDevice_t *device) {
  LOCKED();
  nvmlReturn_t r = sys_enter("nvmlDeviceGetHandleByPciBusId_v2");
  if (r != NVML_SUCCESS) return r;
  if (pciBusId == NULL || device == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  unsigned dom = 0, bus = 0, dev = 0, fn = 0;
  if (sscanf(pciBusId, "%x:%x:%x.%x", &dom, &bus, &dev, &fn) != 4) {
    dom = 0;
    if (sscanf(pciBusId, "%x:%x.%x", &bus, &dev, &fn) != 3) return NVML_ERROR_INVALID_ARGUMENT;
  }
  for (unsigned i = 0; i < S.ngpus; i++) {
    gpu_t *g = &S.gpus[i];
    if (g->domain == dom && g->bus == bus && g->device == dev && fn == 0)
      return handle_out("nvmlDeviceGetHandleByPciBusId_v2", g, device);
  }
  return NVML_ERROR_NOT_FOUND;
}

EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
  DEV_ENTER("nvmlDeviceGetIndex", device);
  NOT_ON_MIG();
  if (index == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  *index = (unsigned)g->handle.gpu;
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
  DEV_ENTER("nvmlDeviceGetName", device);
  if (m == NULL) return copy_str(name, length, g->name);
  char ciName[NVML_DEVICE_NAME_V2_BUFFER_SIZE];
  ci_profile_name(g, m, ciName, sizeof ciName);
  char full[NVML_DEVICE_NAME_V2_BUFFER_SIZE * 2 + 2];
  snprintf(full, sizeof full, "%s %s", g->name, ciName);
  return copy_str(name, length, full);
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
  DEV_ENTER("nvmlDeviceGetUUID", device);
  return copy_str(uuid, length, m != NULL ? m->uuid : g->uuid);
}

EXPORT nvmlReturn_t nvmlDeviceGetBrand(nvmlDevice_t device, unsigned int *type) {
  DEV_ENTER("nvmlDeviceGetBrand", device);
  if (type == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  if (!g->hasBrand) return NVML_ERROR_NOT_SUPPORTED;
  *type = g->brand;
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetArchitecture(nvmlDevice_t device, unsigned int *arch) {
  DEV_ENTER("nvmlDeviceGetArchitecture", device);
  if (arch == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  if (!g->hasArch) return NVML_ERROR_NOT_SUPPORTED;
  *arch = g->arch;
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major, int *minor) {
  DEV_ENTER("nvmlDeviceGetCudaComputeCapability", device);
  if (major == NULL || minor == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  *major = g->ccMajor;
  *minor = g->ccMinor;
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
  DEV_ENTER("nvmlDeviceGetMemoryInfo", device);
  if (memory == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  unsigned long long total = m != NULL ? m->memTotal : g->memTotal;
  unsigned long long used = m != NULL ? m->memUsed : g->memUsed;
  memory->total = total;
  memory->used = used;
  memory->free = total - used;
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
  DEV_ENTER("nvmlDeviceGetMemoryInfo_v2", device);
  if (memory == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  if (memory->version != nvmlMemory_v2) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
  unsigned long long total = m != NULL ? m->memTotal : g->memTotal;
  unsigned long long used = m != NULL ? m->memUsed : g->memUsed;
  memory->total = total;
  memory->reserved = used;
  memory->used = used;
  memory->free = total - used;
  return NVML_SUCCESS;
}

/* Real NVML answers INVALID_ARGUMENT for a MIG device handle here (a MIG device has no
 * /dev/nvidia<minor> of its own; use the parent's). */
EXPORT nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int *minorNumber) {
  DEV_ENTER("nvmlDeviceGetMinorNumber", device);
  NOT_ON_MIG();
  if (minorNumber == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  *minorNumber = g->minor;
  return NVML_SUCCESS;
}

static void fill_pci(const gpu_t *g, nvmlPciInfo_t *pci) {
  memset(pci, 0, sizeof *pci);
  snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.0", g->domain & 0xFFFFu, g->bus & 0xFFu,
           g->device & 0x1Fu);
  snprintf(pci->busId, sizeof pci->busId, "%08X:%02X:%02X.0", g->domain, g->bus & 0xFFu, g->device & 0x1Fu);
  pci->domain = g->domain;
  pci->bus = g->bus;
  pci->device = g->device;
  pci->pciDeviceId = g->pciDeviceId;
  pci->pciSubSystemId = g->pciSubSystemId;
}

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci) {
  DEV_ENTER("nvmlDeviceGetPciInfo_v3", device);
  NOT_ON_MIG();
  if (pci == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  fill_pci(g, pci);
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetNumaNodeId(nvmlDevice_t device, unsigned int *node) {
  DEV_ENTER("nvmlDeviceGetNumaNodeId", device);
  NOT_ON_MIG();
  if (node == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  if (!g->hasNuma) return NVML_ERROR_NOT_SUPPORTED;
  *node = g->numa;
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetAddressingMode(nvmlDevice_t device, nvmlDeviceAddressingMode_v1_t *mode) {
  DEV_ENTER("nvmlDeviceGetAddressingMode", device);
  NOT_ON_MIG();
  if (mode == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  if (mode->version != nvmlDeviceAddressingMode_v1) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
  if (!g->hasAddressingMode) return NVML_ERROR_NOT_SUPPORTED;
  mode->value = g->addressingMode;
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetAttributes_v2(nvmlDevice_t device, nvmlDeviceAttributes_t *attributes) {
  DEV_ENTER("nvmlDeviceGetAttributes_v2", device);
  if (attributes == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  memset(attributes, 0, sizeof *attributes);
  if (m != NULL) {
    const profile_t *pr = &g->profiles[g->gis[m->giId].profileIndex];
    attributes->multiprocessorCount = ci_sms(pr, m->ciPlacement.size);
    attributes->sharedCopyEngineCount = pr->ce;
    attributes->sharedDecoderCount = pr->dec;
    attributes->sharedEncoderCount = pr->enc;
    attributes->sharedJpegCount = pr->jpeg;
    attributes->sharedOfaCount = pr->ofa;
    attributes->gpuInstanceSliceCount = pr->slices;
    attributes->computeInstanceSliceCount = m->ciPlacement.size;
    attributes->memorySizeMB = m->memTotal / (1024ull * 1024ull);
    return NVML_SUCCESS;
  }
  if (!g->hasSms) return NVML_ERROR_NOT_SUPPORTED;
  attributes->multiprocessorCount = g->sms;
  attributes->memorySizeMB = g->memTotal / (1024ull * 1024ull);
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *currentMode, unsigned int *pendingMode) {
  DEV_ENTER("nvmlDeviceGetMigMode", device);
  NOT_ON_MIG();
  if (currentMode == NULL || pendingMode == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  if (!g->migCapable) return NVML_ERROR_NOT_SUPPORTED;
  *currentMode = g->migCurrent;
  *pendingMode = g->migPending;
  return NVML_SUCCESS;
}

/*
 * MIG mode. On bare metal NVML resets the GPU to apply a change, so it takes effect at once:
 * current = pending = mode, activationStatus SUCCESS. Turning it off with GPU instances left is
 * IN_USE. The mode is kept in the MIG state with the layout, so other processes see it.
 */
static nvmlReturn_t set_mig_mode(nvmlDevice_t device, unsigned mode, nvmlReturn_t *activationStatus,
                                 gpu_t **touched) {
  DEV_ENTER("nvmlDeviceSetMigMode", device);
  NOT_ON_MIG();
  if (activationStatus == NULL || mode > NVML_DEVICE_MIG_ENABLE) return NVML_ERROR_INVALID_ARGUMENT;
  if (!g->migCapable) return NVML_ERROR_NOT_SUPPORTED;
  if (mode != NVML_DEVICE_MIG_ENABLE && g->migCurrent == NVML_DEVICE_MIG_ENABLE)
    for (unsigned id = 0; id < MAX_GI_IDS; id++)
      if (g->gis[id].used) return NVML_ERROR_IN_USE;
  g->migCurrent = mode;
  g->migPending = mode;
  *activationStatus = NVML_SUCCESS;
  *touched = g;
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceSetMigMode(nvmlDevice_t device, unsigned int mode, nvmlReturn_t *activationStatus) {
  gpu_t *touched = NULL;
  int fd = mutation_begin();
  nvmlReturn_t r = set_mig_mode(device, mode, activationStatus, &touched);
  mutation_end(fd, touched);
  return r;
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count) {
  DEV_ENTER("nvmlDeviceGetMaxMigDeviceCount", device);
  NOT_ON_MIG();
  if (count == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  *count = g->maxMig;
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index,
                                                        nvmlDevice_t *migDevice) {
  DEV_ENTER("nvmlDeviceGetMigDeviceHandleByIndex", device);
  NOT_ON_MIG();
  if (migDevice == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  if (!g->migCapable) return NVML_ERROR_NOT_SUPPORTED;
  if (index >= g->maxMig) return NVML_ERROR_INVALID_ARGUMENT;
  mig_t *mm = g->migCurrent == NVML_DEVICE_MIG_ENABLE ? mig_at(g, index) : NULL;
  if (mm == NULL) return NVML_ERROR_NOT_FOUND;
  *migDevice = &g->migHandles[mm->giId][mm->ciId];
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t device, unsigned int *isMigDevice) {
  DEV_ENTER("nvmlDeviceIsMigDeviceHandle", device);
  if (isMigDevice == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  *isMigDevice = m != NULL;
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t migDevice, nvmlDevice_t *device) {
  DEV_ENTER("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", migDevice);
  if (device == NULL || m == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  *device = &g->handle;
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t device, unsigned int *id) {
  DEV_ENTER("nvmlDeviceGetGpuInstanceId", device);
  if (id == NULL || m == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  *id = m->giId;
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t device, unsigned int *id) {
  DEV_ENTER("nvmlDeviceGetComputeInstanceId", device);
  if (id == NULL || m == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  *id = m->ciId;
  return NVML_SUCCESS;
}

static nvmlReturn_t profile_enter(gpu_t *g, unsigned profile, const profile_t **out) {
  if (!g->migCapable) return NVML_ERROR_NOT_SUPPORTED;
  if (profile >= NVML_GPU_INSTANCE_PROFILE_COUNT) return NVML_ERROR_INVALID_ARGUMENT;
  if (!g->profiles[profile].present) return NVML_ERROR_NOT_SUPPORTED;
  *out = &g->profiles[profile];
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceProfileInfo(nvmlDevice_t device, unsigned int profile,
                                                        nvmlGpuInstanceProfileInfo_t *info) {
  DEV_ENTER("nvmlDeviceGetGpuInstanceProfileInfo", device);
  NOT_ON_MIG();
  if (info == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  const profile_t *pr = NULL;
  nvmlReturn_t r = profile_enter(g, profile, &pr);
  if (r != NVML_SUCCESS) return r;
  memset(info, 0, sizeof *info);
  info->id = pr->id;
  info->isP2pSupported = pr->isP2p;
  info->sliceCount = pr->slices;
  info->instanceCount = pr->instances;
  info->multiprocessorCount = pr->sms;
  info->copyEngineCount = pr->ce;
  info->decoderCount = pr->dec;
  info->encoderCount = pr->enc;
  info->jpegCount = pr->jpeg;
  info->ofaCount = pr->ofa;
  info->memorySizeMB = pr->memMB;
  return NVML_SUCCESS;
}

/* Accepts nvmlGpuInstanceProfileInfo_v2_t and _v3_t (both 152 bytes; told apart by version). */
EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceProfileInfoV(nvmlDevice_t device, unsigned int profile, void *info) {
  DEV_ENTER("nvmlDeviceGetGpuInstanceProfileInfoV", device);
  NOT_ON_MIG();
  if (info == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  unsigned version = *(const unsigned *)info;
  if (version != nvmlGpuInstanceProfileInfo_v2 && version != nvmlGpuInstanceProfileInfo_v3)
    return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
  const profile_t *pr = NULL;
  nvmlReturn_t r = profile_enter(g, profile, &pr);
  if (r != NVML_SUCCESS) return r;
  if (version == nvmlGpuInstanceProfileInfo_v2) {
    nvmlGpuInstanceProfileInfo_v2_t *v = info;
    memset(v, 0, sizeof *v);
    v->version = version;
    v->id = pr->id;
    v->isP2pSupported = pr->isP2p;
    v->sliceCount = pr->slices;
    v->instanceCount = pr->instances;
    v->multiprocessorCount = pr->sms;
    v->copyEngineCount = pr->ce;
    v->decoderCount = pr->dec;
    v->encoderCount = pr->enc;
    v->jpegCount = pr->jpeg;
    v->ofaCount = pr->ofa;
    v->memorySizeMB = pr->memMB;
    snprintf(v->name, sizeof v->name, "%s", pr->name);
  } else {
    nvmlGpuInstanceProfileInfo_v3_t *v = info;
    memset(v, 0, sizeof *v);
    v->version = version;
    v->id = pr->id;
    v->sliceCount = pr->slices;
    v->instanceCount = pr->instances;
    v->multiprocessorCount = pr->sms;
    v->copyEngineCount = pr->ce;
    v->decoderCount = pr->dec;
    v->encoderCount = pr->enc;
    v->jpegCount = pr->jpeg;
    v->ofaCount = pr->ofa;
    v->memorySizeMB = pr->memMB;
    snprintf(v->name, sizeof v->name, "%s", pr->name);
    v->capabilities = pr->capabilities;
  }
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstancePossiblePlacements_v2(nvmlDevice_t device, unsigned int profileId,
                                                                  nvmlGpuInstancePlacement_t *placements,
                                                                  unsigned int *count) {
  DEV_ENTER("nvmlDeviceGetGpuInstancePossiblePlacements_v2", device);
  NOT_ON_MIG();
  if (count == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  if (!g->migCapable) return NVML_ERROR_NOT_SUPPORTED;
  const profile_t *pr = profile_by_id(g, profileId, NULL);
  if (pr == NULL) return NVML_ERROR_NOT_SUPPORTED;
  if (placements == NULL) {
    *count = pr->nplacements;
    return NVML_SUCCESS;
  }
  if (*count < pr->nplacements) {
    *count = pr->nplacements;
    return NVML_ERROR_INSUFFICIENT_SIZE;
  }
  memcpy(placements, pr->placements, pr->nplacements * sizeof *placements);
  *count = pr->nplacements;
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceById(nvmlDevice_t device, unsigned int id,
                                                 nvmlGpuInstance_t *gpuInstance) {
  DEV_ENTER("nvmlDeviceGetGpuInstanceById", device);
  NOT_ON_MIG();
  if (gpuInstance == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  if (!g->migCapable || g->migCurrent != NVML_DEVICE_MIG_ENABLE) return NVML_ERROR_NOT_SUPPORTED;
  if (id >= MAX_GI_IDS || !g->gis[id].used) return NVML_ERROR_NOT_FOUND;
  *gpuInstance = &g->giHandles[id];
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlGpuInstanceGetInfo(nvmlGpuInstance_t gpuInstance, nvmlGpuInstanceInfo_t *info) {
  GI_ENTER("nvmlGpuInstanceGetInfo", gpuInstance);
  if (info == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  info->device = &g->handle;
  info->id = (unsigned)(gi - g->gis);
  info->profileId = gi->profileId;
  info->placement = gi->placement;
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstances(nvmlDevice_t device, unsigned int profileId,
                                              nvmlGpuInstance_t *gpuInstances, unsigned int *count) {
  DEV_ENTER("nvmlDeviceGetGpuInstances", device);
  NOT_ON_MIG();
  if (gpuInstances == NULL || count == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  if (!g->migCapable || g->migCurrent != NVML_DEVICE_MIG_ENABLE) return NVML_ERROR_NOT_SUPPORTED;
  const profile_t *pr = profile_by_id(g, profileId, NULL);
  if (pr == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  /* The caller's buffer holds the profile's instanceCount entries (nvml.h); never write more. */
  unsigned n = 0;
  for (unsigned id = 0; id < MAX_GI_IDS && n < pr->instances; id++)
    if (g->gis[id].used && g->gis[id].profileId == profileId) gpuInstances[n++] = &g->giHandles[id];
  *count = n;
  return NVML_SUCCESS;
}

/* ---- MIG create/destroy (README.md, "MIG instances") ---- */

/* The profile with the most compute slices (7g): what the whole GPU has of every resource. */
static const profile_t *full_profile(const gpu_t *g) {
  const profile_t *full = NULL;
  for (int i = 0; i < NVML_GPU_INSTANCE_PROFILE_COUNT; i++)
    if (g->profiles[i].present && (full == NULL || g->profiles[i].slices > full->slices)) full = &g->profiles[i];
  return full;
}

static int placement_listed(const profile_t *pr, nvmlGpuInstancePlacement_t pl) {
  for (unsigned i = 0; i < pr->nplacements; i++)
    if (pr->placements[i].start == pl.start && pr->placements[i].size == pl.size) return 1;
  return 0;
}

/*
 * Whether a GI of profile `pr` at `pl` fits next to the existing ones: the profile's instance
 * count, free memory slices, compute slices and media engines (the full profile's totals).
 */
static nvmlReturn_t gi_fits(const gpu_t *g, const profile_t *pr, nvmlGpuInstancePlacement_t pl) {
  const profile_t *full = full_profile(g);
  unsigned same = 0, slices = pr->slices, dec = pr->dec, enc = pr->enc, jpeg = pr->jpeg, ofa = pr->ofa;
  for (unsigned id = 0; id < MAX_GI_IDS; id++) {
    const gi_t *gi = &g->gis[id];
    if (!gi->used) continue;
    const profile_t *p = &g->profiles[gi->profileIndex];
    if (gi->profileId == pr->id) same++;
    if (pl.start < gi->placement.start + gi->placement.size && gi->placement.start < pl.start + pl.size)
      return NVML_ERROR_INSUFFICIENT_RESOURCES; /* real NVML: not ALREADY_EXISTS, even for the same GI */
    slices += p->slices;
    dec += p->dec;
    enc += p->enc;
    jpeg += p->jpeg;
    ofa += p->ofa;
  }
  if (same >= pr->instances) return NVML_ERROR_INSUFFICIENT_RESOURCES;
  if (full != NULL && (slices > full->slices || dec > full->dec || enc > full->enc || jpeg > full->jpeg ||
                       ofa > full->ofa))
    return NVML_ERROR_INSUFFICIENT_RESOURCES;
  return NVML_SUCCESS;
}

/*
 * GI id for a placement, in the A100/H100 pattern (7g: 0, 4 memory slices: 1 + start/4, 2: 3 +
 * start/2, 1: 7 + start); the lowest free id when that one is taken or out of range.
 */
static int new_gi_id(const gpu_t *g, nvmlGpuInstancePlacement_t pl) {
  int want = pl.size == 8 ? 0 : pl.size == 4 ? 1 + (int)pl.start / 4 : pl.size == 2 ? 3 + (int)pl.start / 2
             : pl.size == 1 ? 7 + (int)pl.start : -1;
  if (want >= 0 && want < MAX_GI_IDS && !g->gis[want].used) return want;
  for (int id = 0; id < MAX_GI_IDS; id++)
    if (!g->gis[id].used) return id;
  return -1;
}

static nvmlReturn_t create_gi(const char *fn, nvmlDevice_t device, unsigned profileId,
                              const nvmlGpuInstancePlacement_t *placement, nvmlGpuInstance_t *out,
                              gpu_t **touched) {
  DEV_ENTER(fn, device);
  NOT_ON_MIG();
  if (out == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  if (!g->migCapable || g->virtMode == NVML_GPU_VIRTUALIZATION_MODE_VGPU ||
      g->migCurrent != NVML_DEVICE_MIG_ENABLE)
    return NVML_ERROR_NOT_SUPPORTED;
  int index = 0;
  const profile_t *pr = profile_by_id(g, profileId, &index);
  if (pr == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  nvmlGpuInstancePlacement_t pl = {0, 0};
  if (placement != NULL) {
    pl = *placement;
    if (!placement_listed(pr, pl)) return NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t r = gi_fits(g, pr, pl);
    if (r != NVML_SUCCESS) return r;
  } else {
    unsigned i = 0;
    while (i < pr->nplacements && gi_fits(g, pr, pr->placements[i]) != NVML_SUCCESS) i++;
    if (i == pr->nplacements) return NVML_ERROR_INSUFFICIENT_RESOURCES;
    pl = pr->placements[i];
  }
  int id = new_gi_id(g, pl);
  if (id < 0) return NVML_ERROR_INSUFFICIENT_RESOURCES;
  gi_t *gi = &g->gis[id];
  gi->used = 1;
  gi->profileId = profileId;
  gi->profileIndex = index;
  gi->placement = pl;
  *out = &g->giHandles[id];
  *touched = g;
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceCreateGpuInstanceWithPlacement(nvmlDevice_t device, unsigned int profileId,
                                                             const nvmlGpuInstancePlacement_t *placement,
                                                             nvmlGpuInstance_t *gpuInstance) {
  gpu_t *touched = NULL;
  int fd = mutation_begin();
  nvmlReturn_t r = placement == NULL ? NVML_ERROR_INVALID_ARGUMENT
                                     : create_gi("nvmlDeviceCreateGpuInstanceWithPlacement", device, profileId,
                                                 placement, gpuInstance, &touched);
  mutation_end(fd, touched);
  return r;
}

/* Without a placement: the first of the profile's placements that fits. */
EXPORT nvmlReturn_t nvmlDeviceCreateGpuInstance(nvmlDevice_t device, unsigned int profileId,
                                                nvmlGpuInstance_t *gpuInstance) {
  gpu_t *touched = NULL;
  int fd = mutation_begin();
  nvmlReturn_t r = create_gi("nvmlDeviceCreateGpuInstance", device, profileId, NULL, gpuInstance, &touched);
  mutation_end(fd, touched);
  return r;
}

static void remove_cap_entry(const gpu_t *g, unsigned giId, int ci);

static nvmlReturn_t destroy_gi(nvmlGpuInstance_t gpuInstance, gpu_t **touched) {
  GI_ENTER("nvmlGpuInstanceDestroy", gpuInstance);
  if (g->migCurrent != NVML_DEVICE_MIG_ENABLE) return NVML_ERROR_NOT_SUPPORTED;
  /* Real NVML refuses while compute instances exist (nvml.h: IN_USE). */
  if (ci_count(g, (unsigned)(gi - g->gis)) > 0) return NVML_ERROR_IN_USE;
  remove_cap_entry(g, (unsigned)(gi - g->gis), -1);
  memset(gi, 0, sizeof *gi);
  *touched = g;
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlGpuInstanceDestroy(nvmlGpuInstance_t gpuInstance) {
  gpu_t *touched = NULL;
  int fd = mutation_begin();
  nvmlReturn_t r = destroy_gi(gpuInstance, &touched);
  mutation_end(fd, touched);
  return r;
}

/* ---- compute instances ---- */

static void fill_ci_profile(const profile_t *pr, unsigned index, unsigned slices, nvmlComputeInstanceProfileInfo_t *o) {
  memset(o, 0, sizeof *o);
  o->id = index; /* CI profile ids equal the NVML_COMPUTE_INSTANCE_PROFILE_* index (nvidia-smi mig -lcip) */
  o->sliceCount = slices;
  o->instanceCount = pr->slices / slices;
  o->multiprocessorCount = ci_sms(pr, slices);
  o->sharedCopyEngineCount = pr->ce;
  o->sharedDecoderCount = pr->dec;
  o->sharedEncoderCount = pr->enc;
  o->sharedJpegCount = pr->jpeg;
  o->sharedOfaCount = pr->ofa;
}

static nvmlReturn_t ci_profile_enter(const gpu_t *g, const gi_t *gi, unsigned profile, unsigned engProfile,
                                     const profile_t **pr, unsigned *slices) {
  if (profile >= NVML_COMPUTE_INSTANCE_PROFILE_COUNT || engProfile >= NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_COUNT)
    return NVML_ERROR_INVALID_ARGUMENT;
  *pr = &g->profiles[gi->profileIndex];
  *slices = ci_profile_slices(profile, (*pr)->slices);
  return *slices == 0 ? NVML_ERROR_NOT_SUPPORTED : NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlGpuInstanceGetComputeInstanceProfileInfo(nvmlGpuInstance_t gpuInstance, unsigned int profile,
                                                                 unsigned int engProfile,
                                                                 nvmlComputeInstanceProfileInfo_t *info) {
  GI_ENTER("nvmlGpuInstanceGetComputeInstanceProfileInfo", gpuInstance);
  if (info == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  const profile_t *pr = NULL;
  unsigned slices = 0;
  nvmlReturn_t r = ci_profile_enter(g, gi, profile, engProfile, &pr, &slices);
  if (r != NVML_SUCCESS) return r;
  fill_ci_profile(pr, profile, slices, info);
  return NVML_SUCCESS;
}

/* Accepts nvmlComputeInstanceProfileInfo_v2_t and _v3_t, told apart by version. */
EXPORT nvmlReturn_t nvmlGpuInstanceGetComputeInstanceProfileInfoV(nvmlGpuInstance_t gpuInstance, unsigned int profile,
                                                                  unsigned int engProfile, void *info) {
  GI_ENTER("nvmlGpuInstanceGetComputeInstanceProfileInfoV", gpuInstance);
  if (info == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  unsigned version = *(const unsigned *)info;
  if (version != nvmlComputeInstanceProfileInfo_v2 && version != nvmlComputeInstanceProfileInfo_v3)
    return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
  const profile_t *pr = NULL;
  unsigned slices = 0;
  nvmlReturn_t r = ci_profile_enter(g, gi, profile, engProfile, &pr, &slices);
  if (r != NVML_SUCCESS) return r;
  nvmlComputeInstanceProfileInfo_t v1;
  fill_ci_profile(pr, profile, slices, &v1);
  /* v2 and v3 are the version word, the v1 fields, the name, and (v3) capabilities. */
  nvmlComputeInstanceProfileInfo_v3_t *v = info;
  size_t size = version == nvmlComputeInstanceProfileInfo_v2 ? sizeof(nvmlComputeInstanceProfileInfo_v2_t)
                                                             : sizeof(nvmlComputeInstanceProfileInfo_v3_t);
  memset(v, 0, size);
  v->version = version;
  memcpy(&v->id, &v1, sizeof v1);
  ci_profile_name_for(pr, slices, v->name, sizeof v->name);
  return NVML_SUCCESS;
}

/* Unique among every GPU and MIG UUID of this node; random, so re-creating a placement gives a new one. */
static void fresh_mig_uuid(char *out, size_t cap) {
  static unsigned long long counter;
  for (;;) {
    unsigned char b[16];
    int ok = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      ok = read(fd, b, sizeof b) == (ssize_t)sizeof b;
      close(fd);
    }
    if (!ok) {
      struct timespec t;
      clock_gettime(CLOCK_REALTIME, &t);
      unsigned long long x = (unsigned long long)t.tv_nsec ^ ((unsigned long long)t.tv_sec << 20) ^
                             ((unsigned long long)getpid() << 40) ^ (++counter * 0x9E3779B97F4A7C15ull);
      for (unsigned i = 0; i < sizeof b; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        b[i] = (unsigned char)(x >> 56);
      }
    }
    snprintf(out, cap, "MIG-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
             b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
    int taken = 0;
    for (unsigned k = 0; k < S.ngpus && !taken; k++)
      for (unsigned j = 0; j < MAX_MIG && !taken; j++)
        taken = S.gpus[k].migs[j].used && strcmp(S.gpus[k].migs[j].uuid, out) == 0;
    if (!taken) return;
  }
}

/*
 * On a real host NVML has nvidia-modprobe create /dev/nvidia-caps/nvidia-cap<N> for a new
 * instance's GI and CI access caps; with "hostDevRoot" the fake makes them there (plain files,
 * numbered as /proc/driver/nvidia-caps/mig-minors numbers them). Like device nodes, they stay.
 */
/*
 * The kernel module lists each GPU and compute instance's access cap under
 * /proc/driver/nvidia/capabilities/gpu<minor>/mig/gi<G>[/ci<C>]/access ("DeviceFileMinor: N",
 * mode 0444) while it exists; NVIDIA's driver reads the minors there. With "hostProcRoot" the
 * fake keeps these entries in step with its instances. `ci` < 0: the GPU instance's own.
 */
static void mkdirs(const char *path) {
  char buf[4400];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    mkdir(buf, 0755);
    *p = '/';
  }
  mkdir(buf, 0755);
}

static void cap_entry_dir(char *out, size_t n, const gpu_t *g, unsigned giId, int ci) {
  if (ci < 0)
    snprintf(out, n, "%s/driver/nvidia/capabilities/gpu%u/mig/gi%u", S.hostProcRoot, g->minor, giId);
  else
    snprintf(out, n, "%s/driver/nvidia/capabilities/gpu%u/mig/gi%u/ci%d", S.hostProcRoot, g->minor, giId, ci);
}

static void write_cap_entry(const gpu_t *g, unsigned giId, int ci, unsigned minor) {
  if (S.hostProcRoot[0] == '\0' || g->minor >= 32) return;
  char dir[4300], path[4400], text[96];
  cap_entry_dir(dir, sizeof dir, g, giId, ci);
  mkdirs(dir);
  snprintf(path, sizeof path, "%s/access", dir);
  int len = snprintf(text, sizeof text, "DeviceFileMinor: %u\nDeviceFileMode: 292\nDeviceFileModify: 1\n", minor);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0444);
  if (fd < 0) return;
  if (write(fd, text, (size_t)len) != len) { /* best effort, like the other host files */ }
  close(fd);
}

static void remove_cap_entry(const gpu_t *g, unsigned giId, int ci) {
  if (S.hostProcRoot[0] == '\0' || g->minor >= 32) return;
  char dir[4300], path[4400];
  cap_entry_dir(dir, sizeof dir, g, giId, ci);
  snprintf(path, sizeof path, "%s/access", dir);
  unlink(path);
  rmdir(dir);
}

static void touch_access_caps(const gpu_t *g, unsigned giId, unsigned ciId) {
  unsigned giMinor = 3 + g->minor * MAX_GI_IDS * (1 + MAX_CI_IDS) + giId * (1 + MAX_CI_IDS);
  write_cap_entry(g, giId, -1, giMinor);
  write_cap_entry(g, giId, (int)ciId, giMinor + 1 + ciId);
  if (S.hostDevRoot[0] == '\0' || g->minor >= 32) return;
  char dir[4200], path[4300];
  snprintf(dir, sizeof dir, "%s/nvidia-caps", S.hostDevRoot);
  mkdir(S.hostDevRoot, 0755);
  mkdir(dir, 0755);
  unsigned base = 3 + g->minor * MAX_GI_IDS * (1 + MAX_CI_IDS) + giId * (1 + MAX_CI_IDS);
  unsigned minors[2] = {base, base + 1 + ciId};
  for (unsigned i = 0; i < 2; i++) {
    snprintf(path, sizeof path, "%s/nvidia-cap%u", dir, minors[i]);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) close(fd);
  }
}

static nvmlReturn_t create_ci(nvmlGpuInstance_t gpuInstance, unsigned profileId, nvmlComputeInstance_t *out,
                              gpu_t **touched) {
  GI_ENTER("nvmlGpuInstanceCreateComputeInstance", gpuInstance);
  if (out == NULL || profileId >= NVML_COMPUTE_INSTANCE_PROFILE_COUNT) return NVML_ERROR_INVALID_ARGUMENT;
  unsigned giId = (unsigned)(gi - g->gis);
  const profile_t *pr = &g->profiles[gi->profileIndex];
  unsigned s = ci_profile_slices(profileId, pr->slices);
  if (s == 0) return NVML_ERROR_NOT_SUPPORTED;
  /* First free aligned run of `s` compute slices in the GI. */
  unsigned used = 0;
  for (unsigned j = 0; j < MAX_MIG; j++) {
    const mig_t *o = &g->migs[j];
    if (o->used && o->giId == giId) used |= ((1u << o->ciPlacement.size) - 1u) << o->ciPlacement.start;
  }
  unsigned start = 0, want = (1u << s) - 1u;
  while (start + s <= pr->slices && (used & (want << start)) != 0) start += s;
  if (start + s > pr->slices) return NVML_ERROR_INSUFFICIENT_RESOURCES;
  if (mig_count(g) >= g->maxMig) return NVML_ERROR_INSUFFICIENT_RESOURCES;
  unsigned ciId = 0;
  while (ciId < MAX_CI_IDS && find_mig(g, giId, ciId) != NULL) ciId++;
  mig_t *m = free_mig_slot(g);
  if (ciId == MAX_CI_IDS || m == NULL) return NVML_ERROR_INSUFFICIENT_RESOURCES;
  memset(m, 0, sizeof *m);
  fresh_mig_uuid(m->uuid, sizeof m->uuid);
  m->used = 1;
  m->giId = giId;
  m->ciId = ciId;
  m->ciProfile = profileId;
  m->ciPlacement.start = start;
  m->ciPlacement.size = s;
  m->memTotal = pr->memMB * 1024ull * 1024ull;
  touch_access_caps(g, giId, ciId);
  *out = &g->ciHandles[giId][ciId];
  *touched = g;
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlGpuInstanceCreateComputeInstance(nvmlGpuInstance_t gpuInstance, unsigned int profileId,
                                                         nvmlComputeInstance_t *computeInstance) {
  gpu_t *touched = NULL;
  int fd = mutation_begin();
  nvmlReturn_t r = create_ci(gpuInstance, profileId, computeInstance, &touched);
  mutation_end(fd, touched);
  return r;
}

static nvmlReturn_t destroy_ci(nvmlComputeInstance_t computeInstance, gpu_t **touched) {
  CI_ENTER("nvmlComputeInstanceDestroy", computeInstance);
  if (m->busy) return NVML_ERROR_IN_USE; /* a process runs on it */
  remove_cap_entry(g, m->giId, (int)m->ciId);
  memset(m, 0, sizeof *m);
  *touched = g;
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlComputeInstanceDestroy(nvmlComputeInstance_t computeInstance) {
  gpu_t *touched = NULL;
  int fd = mutation_begin();
  nvmlReturn_t r = destroy_ci(computeInstance, &touched);
  mutation_end(fd, touched);
  return r;
}

EXPORT nvmlReturn_t nvmlGpuInstanceGetComputeInstances(nvmlGpuInstance_t gpuInstance, unsigned int profileId,
                                                       nvmlComputeInstance_t *computeInstances, unsigned int *count) {
  GI_ENTER("nvmlGpuInstanceGetComputeInstances", gpuInstance);
  if (computeInstances == NULL || count == NULL || profileId >= NVML_COMPUTE_INSTANCE_PROFILE_COUNT)
    return NVML_ERROR_INVALID_ARGUMENT;
  unsigned giId = (unsigned)(gi - g->gis);
  unsigned s = ci_profile_slices(profileId, g->profiles[gi->profileIndex].slices);
  if (s == 0) return NVML_ERROR_NOT_SUPPORTED;
  /* The caller's buffer holds the CI profile's instanceCount entries (nvml.h). */
  unsigned n = 0, max = g->profiles[gi->profileIndex].slices / s;
  for (unsigned ci = 0; ci < MAX_CI_IDS && n < max; ci++) {
    const mig_t *mm = find_mig(g, giId, ci);
    if (mm != NULL && mm->ciProfile == profileId) computeInstances[n++] = &g->ciHandles[giId][ci];
  }
  *count = n;
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlGpuInstanceGetComputeInstanceById(nvmlGpuInstance_t gpuInstance, unsigned int id,
                                                          nvmlComputeInstance_t *computeInstance) {
  GI_ENTER("nvmlGpuInstanceGetComputeInstanceById", gpuInstance);
  if (computeInstance == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  unsigned giId = (unsigned)(gi - g->gis);
  if (id >= MAX_CI_IDS || find_mig(g, giId, id) == NULL) return NVML_ERROR_NOT_FOUND;
  *computeInstance = &g->ciHandles[giId][id];
  return NVML_SUCCESS;
}

static nvmlReturn_t ci_info(const char *fn, nvmlComputeInstance_t computeInstance, nvmlComputeInstanceInfo_t *info) {
  CI_ENTER(fn, computeInstance);
  if (info == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  info->device = &g->migHandles[m->giId][m->ciId];
  info->gpuInstance = &g->giHandles[m->giId];
  info->id = m->ciId;
  info->profileId = m->ciProfile;
  info->placement = m->ciPlacement;
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlComputeInstanceGetInfo_v2(nvmlComputeInstance_t computeInstance,
                                                  nvmlComputeInstanceInfo_t *info) {
  return ci_info("nvmlComputeInstanceGetInfo_v2", computeInstance, info);
}

/* The pre-_v2 name of the same call (same struct). */
EXPORT nvmlReturn_t nvmlComputeInstanceGetInfo(nvmlComputeInstance_t computeInstance, nvmlComputeInstanceInfo_t *info) {
  return ci_info("nvmlComputeInstanceGetInfo", computeInstance, info);
}

EXPORT nvmlReturn_t nvmlDeviceGetVirtualizationMode(nvmlDevice_t device, unsigned int *pVirtualMode) {
  DEV_ENTER("nvmlDeviceGetVirtualizationMode", device);
  NOT_ON_MIG();
  if (pVirtualMode == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  *pVirtualMode = g->virtMode;
  return NVML_SUCCESS;
}

/* ---- events: nvmlEventSet* ---- */
/*
 * Events come from $FAKE_NVML_EVENTS, one per line appended to it:
 *   <gpu index> <event type> <event data> [<gpu instance id> <compute instance id>]
 * e.g. "0 8 79" (XID 79 on GPU 0) or "1 0x100 0" (MIG configuration change on GPU 1). A set
 * sees the lines appended after it was created, for the GPUs and types registered on it.
 */

static struct nvmlEventSet_st *resolve_set(nvmlEventSet_t set) {
  uintptr_t p = (uintptr_t)set;
  if (p < (uintptr_t)&g_sets[0] || p >= (uintptr_t)&g_sets[MAX_EVENT_SETS]) return NULL;
  if ((p - (uintptr_t)&g_sets[0]) % sizeof g_sets[0] != 0 || set->magic != EVENT_SET_MAGIC) return NULL;
  return set;
}

static long events_file_size(void) {
  const char *path = getenv("FAKE_NVML_EVENTS");
  struct stat st;
  if (path == NULL || *path == '\0' || stat(path, &st) != 0) return 0;
  return (long)st.st_size;
}

EXPORT nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set) {
  if (set == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  LOCKED();
  nvmlReturn_t r = sys_enter("nvmlEventSetCreate");
  if (r != NVML_SUCCESS) return r;
  for (unsigned i = 0; i < MAX_EVENT_SETS; i++) {
    if (g_sets[i].magic == EVENT_SET_MAGIC) continue;
    memset(&g_sets[i], 0, sizeof g_sets[i]);
    g_sets[i].magic = EVENT_SET_MAGIC;
    g_sets[i].offset = events_file_size();
    *set = &g_sets[i];
    return NVML_SUCCESS;
  }
  return NVML_ERROR_INSUFFICIENT_RESOURCES;
}

EXPORT nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) {
  lock_acquire();
  struct nvmlEventSet_st *es = resolve_set(set);
  nvmlReturn_t r = g_refcount == 0 ? NVML_ERROR_UNINITIALIZED : es == NULL ? NVML_ERROR_INVALID_ARGUMENT : NVML_SUCCESS;
  if (r == NVML_SUCCESS) memset(es, 0, sizeof *es);
  pthread_mutex_unlock(&g_lock);
  return r;
}

EXPORT nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t device, unsigned long long *eventTypes) {
  DEV_ENTER("nvmlDeviceGetSupportedEventTypes", device);
  NOT_ON_MIG();
  if (eventTypes == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  *eventTypes = g->supportedEvents;
  return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t device, unsigned long long eventTypes, nvmlEventSet_t set) {
  DEV_ENTER("nvmlDeviceRegisterEvents", device);
  NOT_ON_MIG();
  if ((eventTypes & ~g->supportedEvents) != 0) return NVML_ERROR_NOT_SUPPORTED;
  struct nvmlEventSet_st *es = resolve_set(set);
  if (es == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  es->mask[device->gpu] |= eventTypes;
  return NVML_SUCCESS;
}

/* The next registered event after the set's offset, if a complete line holds one (lock held). */
static int next_event(struct nvmlEventSet_st *es, nvmlEventData_t *data) {
  const char *path = getenv("FAKE_NVML_EVENTS");
  if (path == NULL || *path == '\0') return 0;
  FILE *f = fopen(path, "rb");
  if (f == NULL) return 0;
  int found = 0;
  char line[256];
  if (fseek(f, es->offset, SEEK_SET) == 0) {
    while (!found && fgets(line, sizeof line, f) != NULL) {
      size_t len = strlen(line);
      if (len == 0 || line[len - 1] != '\n') break; /* a line still being written */
      es->offset += (long)len;
      unsigned long long idx = 0, type = 0, edata = 0, gi = 0xFFFFFFFFULL, ci = 0xFFFFFFFFULL;
      char *p = line, *end = NULL;
      idx = strtoull(p, &end, 0);
      if (end == p) continue;
      p = end;
      type = strtoull(p, &end, 0);
      if (end == p) continue;
      p = end;
      edata = strtoull(p, &end, 0);
      p = end;
      unsigned long long v = strtoull(p, &end, 0);
      if (end != p) {
        gi = v;
        p = end;
        v = strtoull(p, &end, 0);
        if (end != p) ci = v;
      }
      if (idx >= S.ngpus || (es->mask[idx] & type) == 0) continue;
      data->device = &S.gpus[idx].handle;
      data->eventType = type;
      data->eventData = edata;
      data->gpuInstanceId = (unsigned)gi;
      data->computeInstanceId = (unsigned)ci;
      found = 1;
    }
  }
  fclose(f);
  return found;
}

EXPORT nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms) {
  if (data == NULL) return NVML_ERROR_INVALID_ARGUMENT;
  struct timespec start, now, nap = {0, 20 * 1000 * 1000};
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    lock_acquire();
    struct nvmlEventSet_st *es = resolve_set(set);
    nvmlReturn_t r = g_refcount == 0 ? NVML_ERROR_UNINITIALIZED : es == NULL ? NVML_ERROR_INVALID_ARGUMENT : NVML_SUCCESS;
    int found = r == NVML_SUCCESS && next_event(es, data);
    pthread_mutex_unlock(&g_lock);
    if (r != NVML_SUCCESS) return r;
    if (found) return NVML_SUCCESS;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long elapsed = (now.tv_sec - start.tv_sec) * 1000L + (now.tv_nsec - start.tv_nsec) / 1000000L;
    if (elapsed >= (long)timeoutms) return NVML_ERROR_TIMEOUT;
    nanosleep(&nap, NULL);
  }
}

