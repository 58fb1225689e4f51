// Mirage.cs: the C# binding of mirage (include/mirage.h), one file to drop into a Unity, Godot-C# or .NET
// project (or build with Mirage.csproj). C# 6, no unsafe code, no assembly beyond mscorlib and System.
//
//     using (var ctx = new Mirage.Context("models/fashion-text"))
//     {
//         Mirage.Image[] images = ctx.Generate(new Mirage.GenerateOptions {
//             Prompt = "a photo of a sandal", Seed = 7, Steps = 20, Count = 4,
//             Progress = (step, total) => true,            // false cancels; ctx.Cancel() from any thread
//         });
//         byte[] rgba = images[0].ToRgba32(bottomUp: true); // Unity: texture.LoadRawTextureData(rgba)
//
//         // Without blocking: a Task (a job of the context's worker threads), or a Job stepped by a game loop.
//         using (Mirage.ImageBatch batch = await ctx.GenerateAsync(new Mirage.GenerateOptions { Steps = 20 }, token))
//             batch.WriteInto(0, new Mirage.Target(bgra, 56, 56, Mirage.PixelFormat.Bgra8) { BottomUp = true });
//     }
//
// Every failing library call throws MirageException (Status + the library's message, read on the calling
// thread right after the call). Bad arguments the binding can see itself throw ArgumentException (or
// ArgumentNullException, ArgumentOutOfRangeException); a disposed Context throws ObjectDisposedException.
// An exception thrown by a Progress or Preview callback cancels the run and is rethrown by the call that
// ran it (it never unwinds through the native library).
//
// The native library is loaded as "mirage" (libmirage.so, mirage.dll, libmirage.dylib): see README.md for
// where to put it (Unity: Assets/Plugins; Godot/.NET: next to the app, Runtime.LibraryPath or
// MIRAGE_LIBRARY_PATH; mono: LD_LIBRARY_PATH or a dllmap).

using System;
using System.Collections.Generic;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.Win32.SafeHandles;
#if UNITY_5_3_OR_NEWER
using MonoPInvokeCallbackAttribute = AOT.MonoPInvokeCallbackAttribute;
#endif

namespace Mirage
{
    /// <summary>The result of a library call (MirageStatus). Values match MIRAGE_OK / MIRAGE_ERR_*.</summary>
    public enum Status : uint
    {
        Ok = 0,
        InvalidArgument = 1,
        RuntimeLoad = 2,
        RuntimeAlreadyInitialised = 3,
        ModelNotFound = 4,
        InvalidModel = 5,
        Unsupported = 6,
        Inference = 7,
        Io = 8,
        Image = 9,
        Cancelled = 10,
        Panic = 11,
        /// <summary>The context's queue of jobs not yet started is full (<see cref="ContextOptions.MaxQueuedJobs"/>):
        /// nothing was submitted; try again once some have started or ended.</summary>
        Busy = 12,
    }

    /// <summary>An execution provider (MIRAGE_PROVIDER_*).</summary>
    public enum Provider : uint
    {
        /// <summary>For a context: the runtime's provider; for the runtime: Auto.</summary>
        Default = 0,
        /// <summary>TensorRT, then CUDA, then CPU.</summary>
        Auto = 1,
        TensorRT = 2,
        Cuda = 3,
        Cpu = 4,
    }

    /// <summary>Severity of a log line (MIRAGE_LOG_*).</summary>
    public enum LogLevel : uint
    {
        Debug = 0,
        Info = 1,
        Warn = 2,
        Error = 3,
    }

    /// <summary>A model of a set (MIRAGE_MODEL_*).</summary>
    public enum ModelKind : uint
    {
        VaeEncoder = 1,
        VaeDecoder = 2,
        Unet = 3,
        TextEncoder = 4,
    }

    /// <summary>Pixel layouts, channels interleaved (MIRAGE_PIXEL_*). Images (<see cref="Image"/>, results,
    /// previews) are Gray8, Rgb8 or Rgba8; a <see cref="Target"/> also takes Bgra8 and Rgba32F.</summary>
    public enum PixelFormat : uint
    {
        /// <summary>1 byte per pixel: grey.</summary>
        Gray8 = 1,
        /// <summary>3 bytes per pixel: red, green, blue.</summary>
        Rgb8 = 2,
        /// <summary>4 bytes per pixel: red, green, blue, straight alpha.</summary>
        Rgba8 = 3,
        /// <summary>4 bytes per pixel: blue, green, red, alpha (Direct3D, Windows bitmaps, many engines'
        /// textures). Only for a <see cref="Target"/>.</summary>
        Bgra8 = 4,
        /// <summary>16 bytes per pixel: red, green, blue, alpha as floats, colour in linear light (converted
        /// from sRGB), alpha as is. Only for a <see cref="Target"/> over a float[].</summary>
        Rgba32F = 5,
    }

    /// <summary>How an image is resized to a <see cref="Target"/> of another size (MIRAGE_FILTER_*).</summary>
    public enum Filter : uint
    {
        /// <summary>Linear interpolation between the four nearest pixels, in premultiplied alpha (the default).</summary>
        Bilinear = 0,
        /// <summary>Each target pixel copies the source pixel it falls in: crisp pixel art at integer scales.</summary>
        Nearest = 1,
    }

    /// <summary>Who runs a job (MIRAGE_JOB_WORKERS, MIRAGE_JOB_MANUAL).</summary>
    public enum JobMode : uint
    {
        /// <summary>The context's worker threads (<see cref="ContextOptions.Workers"/>), in submission order.</summary>
        Workers = 0,
        /// <summary>Nobody until the host calls <see cref="Job.Advance"/> (a game loop, a time budget a frame).</summary>
        Manual = 1,
    }

    /// <summary>Where a job is (MIRAGE_JOB_QUEUED ... MIRAGE_JOB_CANCELLED).</summary>
    public enum JobState : uint
    {
        /// <summary>Submitted; no step has run yet.</summary>
        Queued = 1,
        /// <summary>At least one step has run, not all.</summary>
        Running = 2,
        /// <summary>Every step has run: the result waits to be taken.</summary>
        Done = 3,
        /// <summary>A step failed: taking the result throws the error.</summary>
        Failed = 4,
        /// <summary>Cancelled before it finished: taking the result throws MirageException (Status.Cancelled).</summary>
        Cancelled = 5,
    }

    /// <summary>MIRAGE_TARGET_* (<see cref="Target.BottomUp"/>, <see cref="Target.Premultiplied"/>).</summary>
    [Flags]
    internal enum TargetFlags : uint
    {
        None = 0,
        BottomUp = 1,
        Premultiplied = 2,
    }

    /// <summary>A failed library call: <see cref="Status"/> and the library's detailed message (which is also
    /// the exception's Message; the library's messages start with the kind of error, e.g. "invalid argument:
    /// params->steps is 0, out of range 1..=1000").</summary>
    public class MirageException : Exception
    {
        public MirageException(Status status, string detail)
            : base(string.IsNullOrEmpty(detail) ? Runtime.StatusName(status) : detail)
        {
            Status = status;
            Detail = detail;
        }

        /// <summary>What the library returned.</summary>
        public Status Status { get; private set; }

        /// <summary>The library's message (mirage_last_error) without the status name.</summary>
        public string Detail { get; private set; }
    }

    /// <summary>
    /// Images in the binding's own memory: <see cref="Width"/> x <see cref="Height"/> pixels of
    /// <see cref="Channels"/> bytes (1 grey, 3 RGB, 4 RGBA), rows top to bottom, packed.
    /// </summary>
    public sealed class Image
    {
        /// <summary>An image over <paramref name="pixels"/> (not copied), or zeroed pixels when it is null.</summary>
        public Image(int width, int height, int channels, byte[] pixels = null)
        {
            if (width <= 0) throw new ArgumentOutOfRangeException("width", width, "width must be positive");
            if (height <= 0) throw new ArgumentOutOfRangeException("height", height, "height must be positive");
            if (channels != 1 && channels != 3 && channels != 4)
                throw new ArgumentOutOfRangeException("channels", channels, "channels must be 1, 3 or 4");
            long size = (long)width * height * channels;
            if (size > int.MaxValue) throw new ArgumentException("the image is too large for one byte[]");
            if (pixels == null) pixels = new byte[size];
            else if (pixels.Length != size)
                throw new ArgumentException(string.Format(
                    "pixels has {0} bytes; {1}x{2} with {3} channels needs {4}",
                    pixels.Length, width, height, channels, size), "pixels");
            Width = width;
            Height = height;
            Channels = channels;
            Pixels = pixels;
        }

        public int Width { get; private set; }
        public int Height { get; private set; }
        /// <summary>1 (grey), 3 (RGB) or 4 (RGBA).</summary>
        public int Channels { get; private set; }
        /// <summary>Width * Height * Channels bytes, row-major, top row first.</summary>
        public byte[] Pixels { get; private set; }

        public PixelFormat Format { get { return FormatOf(Channels); } }

        /// <summary>The pixels as RGBA32 (4 bytes a pixel; grey is replicated, alpha 255 when absent): what
        /// Unity's <c>Texture2D.LoadRawTextureData</c> (TextureFormat.RGBA32) and Godot's
        /// <c>Image.CreateFromData(..., Image.Format.Rgba8, ...)</c> take. <paramref name="bottomUp"/> puts the
        /// last row first, as Unity textures are laid out.</summary>
        public byte[] ToRgba32(bool bottomUp = false)
        {
            var rgba = new byte[Width * Height * 4];
            for (int y = 0; y < Height; y++)
            {
                int src = y * Width * Channels;
                int dst = (bottomUp ? Height - 1 - y : y) * Width * 4;
                for (int x = 0; x < Width; x++, src += Channels, dst += 4)
                {
                    switch (Channels)
                    {
                        case 1:
                            rgba[dst] = rgba[dst + 1] = rgba[dst + 2] = Pixels[src];
                            rgba[dst + 3] = 255;
                            break;
                        case 3:
                            rgba[dst] = Pixels[src];
                            rgba[dst + 1] = Pixels[src + 1];
                            rgba[dst + 2] = Pixels[src + 2];
                            rgba[dst + 3] = 255;
                            break;
                        default:
                            rgba[dst] = Pixels[src];
                            rgba[dst + 1] = Pixels[src + 1];
                            rgba[dst + 2] = Pixels[src + 2];
                            rgba[dst + 3] = Pixels[src + 3];
                            break;
                    }
                }
            }
            return rgba;
        }

        /// <summary>A 4-channel image from RGBA32 bytes (copied); <paramref name="bottomUp"/> when the last
        /// row comes first (Unity's <c>Texture2D.GetRawTextureData</c>).</summary>
        public static Image FromRgba32(int width, int height, byte[] rgba, bool bottomUp = false)
        {
            if (rgba == null) throw new ArgumentNullException("rgba");
            var image = new Image(width, height, 4);
            if (rgba.Length != image.Pixels.Length)
                throw new ArgumentException(string.Format("rgba has {0} bytes; {1}x{2} RGBA32 needs {3}",
                    rgba.Length, width, height, image.Pixels.Length), "rgba");
            int row = width * 4;
            for (int y = 0; y < height; y++)
                Buffer.BlockCopy(rgba, (bottomUp ? height - 1 - y : y) * row, image.Pixels, y * row, row);
            return image;
        }

        /// <summary>A copy with <paramref name="channels"/> channels (1, 3 or 4), e.g. to feed a texture's
        /// pixels to a grey model set: grey is replicated into RGB, a missing alpha is 255, colour becomes grey
        /// as (299 R + 587 G + 114 B) / 1000 rounded, and alpha is dropped.</summary>
        public Image ConvertTo(int channels)
        {
            var result = new Image(Width, Height, channels);
            var dst = result.Pixels;
            for (int i = 0, s = 0, d = 0; i < Width * Height; i++, s += Channels, d += channels)
            {
                byte r = Pixels[s], g = Channels == 1 ? r : Pixels[s + 1], b = Channels == 1 ? r : Pixels[s + 2];
                byte a = Channels == 4 ? Pixels[s + 3] : (byte)255;
                if (channels == 1)
                    dst[d] = Channels == 1 ? r : (byte)((299 * r + 587 * g + 114 * b + 500) / 1000);
                else
                {
                    dst[d] = r;
                    dst[d + 1] = g;
                    dst[d + 2] = b;
                    if (channels == 4) dst[d + 3] = a;
                }
            }
            return result;
        }

        internal static PixelFormat FormatOf(int channels)
        {
            switch (channels)
            {
                case 1: return PixelFormat.Gray8;
                case 3: return PixelFormat.Rgb8;
                case 4: return PixelFormat.Rgba8;
                default: throw new ArgumentOutOfRangeException("channels", channels, "channels must be 1, 3 or 4");
            }
        }

        internal static int ChannelsOf(PixelFormat format)
        {
            switch (format)
            {
                case PixelFormat.Gray8: return 1;
                case PixelFormat.Rgb8: return 3;
                case PixelFormat.Rgba8: return 4;
                default: throw new ArgumentOutOfRangeException("format", format, "unknown pixel format");
            }
        }
    }

    /// <summary>A batch of latents: <see cref="Data"/> holds Count * Channels * Height * Width floats in NCHW
    /// (row-major) order. Plain managed memory: the native latent lives only during a call.</summary>
    public sealed class Latents
    {
        /// <summary>Latents over <paramref name="data"/> (not copied); its length must be the shape's product.</summary>
        public Latents(float[] data, int count, int channels, int height, int width)
        {
            if (data == null) throw new ArgumentNullException("data");
            if (count <= 0 || channels <= 0 || height <= 0 || width <= 0)
                throw new ArgumentOutOfRangeException("count", "every dimension must be positive");
            long size = (long)count * channels * height * width;
            if (data.Length != size)
                throw new ArgumentException(string.Format("data has {0} floats; the shape {1}x{2}x{3}x{4} needs {5}",
                    data.Length, count, channels, height, width, size), "data");
            Data = data;
            Count = count;
            Channels = channels;
            Height = height;
            Width = width;
        }

        public float[] Data { get; private set; }
        public int Count { get; private set; }
        public int Channels { get; private set; }
        public int Height { get; private set; }
        public int Width { get; private set; }

        /// <summary>{Count, Channels, Height, Width}.</summary>
        public int[] Shape { get { return new[] { Count, Channels, Height, Width }; } }

        /// <summary>Latent <paramref name="index"/> alone (copied), as a batch of one.</summary>
        public Latents Item(int index)
        {
            if (index < 0 || index >= Count) throw new ArgumentOutOfRangeException("index");
            int n = Channels * Height * Width;
            var data = new float[n];
            Array.Copy(Data, (long)index * n, data, 0, n);
            return new Latents(data, 1, Channels, Height, Width);
        }
    }

    /// <summary>What <see cref="Context.Encode"/> gives: the latent distribution of each image.</summary>
    public sealed class LatentDistribution
    {
        internal LatentDistribution(Latents mean, Latents logvar)
        {
            Mean = mean;
            Logvar = logvar;
        }

        public Latents Mean { get; private set; }
        public Latents Logvar { get; private set; }
    }

    /// <summary>The text conditioning of a set: tokens per prompt and floats per token.</summary>
    public sealed class TextShape
    {
        internal TextShape(int tokens, int width)
        {
            Tokens = tokens;
            Width = width;
        }

        /// <summary>Tokens per prompt ([CLS] and [SEP] included).</summary>
        public int Tokens { get; private set; }
        /// <summary>Floats per embedding (384 for MiniLM-L6).</summary>
        public int Width { get; private set; }
    }

    /// <summary>A prompt's embeddings (<see cref="Context.Embed"/>).</summary>
    public sealed class TextEmbedding
    {
        internal TextEmbedding(float[] pooled, float[] tokens, TextShape shape)
        {
            Pooled = pooled;
            Tokens = tokens;
            Shape = shape;
        }

        /// <summary>The L2-normalised sentence embedding: Shape.Width floats.</summary>
        public float[] Pooled { get; private set; }
        /// <summary>Shape.Tokens x Shape.Width floats, row-major; null unless asked for.</summary>
        public float[] Tokens { get; private set; }
        public TextShape Shape { get; private set; }
    }

    /// <summary>What a model set is (<see cref="Context.Info"/>).</summary>
    public sealed class ContextInfo
    {
        /// <summary>manifest.json's "name".</summary>
        public string Name { get; internal set; }
        public int Width { get; internal set; }
        public int Height { get; internal set; }
        /// <summary>1 grey, 3 RGB, 4 RGBA: what Encode, Img2Img, Denoise and Inpaint take.</summary>
        public int Channels { get; internal set; }
        /// <summary>{channels, height, width} of one latent; null when the set has no VAE.</summary>
        public int[] LatentShape { get; internal set; }
        /// <summary>Whether the set's VAE was made for decoding prior samples (SamplePrior + Decode give images,
        /// e.g. models/fashion-vae); false where they may give blobs or where the set has no VAE.</summary>
        public bool PriorSampleable { get; internal set; }
        /// <summary>The provider each model of the set really runs on; only the models it has.</summary>
        public IDictionary<ModelKind, Provider> Providers { get; internal set; }
        /// <summary>The text conditioning; null when the set is not text-conditioned.</summary>
        public TextShape Text { get; internal set; }
        public bool IsTextConditioned { get { return Text != null; } }
    }

    /// <summary>Options of Generate, Img2Img, Denoise, Inpaint and Interpolate (MirageDiffusionParams).
    /// The defaults are the library's, except <see cref="Format"/> (null = the set's own channels).</summary>
    public sealed class GenerateOptions
    {
        public GenerateOptions()
        {
            Steps = 50;
            Count = 1;
            Strength = 1.0f;
            Guidance = Runtime.GuidanceDefault;
        }

        /// <summary>Text-conditioned sets: what to draw (UTF-8 on the way in); null or "" = unconditional.
        /// Interpolate ignores it.</summary>
        public string Prompt { get; set; }
        /// <summary>What to steer away from; null or "" = nothing.</summary>
        public string Negative { get; set; }
        /// <summary>The same inputs and seed give the same pixels (on one machine and provider).</summary>
        public ulong Seed { get; set; }
        /// <summary>Sampler steps of a full run, 1 to 1000 (default 50); img2img, denoise and inpaint run the
        /// Strength fraction of them.</summary>
        public int Steps { get; set; }
        /// <summary>Generate: images made together (default 1). Interpolate: frames per U-Net batch.
        /// Others ignore it.</summary>
        public int Count { get; set; }
        /// <summary>Classifier-free guidance in [0, 50]; <see cref="Runtime.GuidanceDefault"/> (-1, the
        /// default) = the set's own. Applies only with a prompt or negative prompt.</summary>
        public float Guidance { get; set; }
        /// <summary>null (default) or "auto": the set's own (ddim, or a diffusers folder's scheduler);
        /// "ddim", "dpm++2m"; diffusers folders also "dpm++2m-karras", "euler", "euler-a", "pndm", "lcm".
        /// Case-insensitive.</summary>
        public string Sampler { get; set; }
        /// <summary>DDIM's randomness in [0, 1]; 0 (default) is deterministic.</summary>
        public float Eta { get; set; }
        /// <summary>Img2Img, Denoise, Inpaint: how far into the noise the input goes, in (0, 1]; default 1
        /// (Img2Img: set 0.5 to 0.8; Denoise: 0.05 to 0.2 for mild noise; Inpaint: 1).</summary>
        public float Strength { get; set; }
        /// <summary>The results' (and previews') format; null (default) = the set's own channels, so that a
        /// result can go back into Img2Img or Encode. PixelFormat.Rgba8 for textures.</summary>
        public PixelFormat? Format { get; set; }
        /// <summary>(steps done, steps in all) after every step, on the calling thread; false cancels (the
        /// call throws MirageException with Status.Cancelled). An exception thrown here cancels too and is
        /// rethrown by the call.</summary>
        public Func<int, int, bool> Progress { get; set; }
        /// <summary>(steps done, the current estimate of the images, copied) after every step; false cancels.
        /// Costs one VAE decode a step. Blocking calls only: a job keeps its previews instead
        /// (<see cref="JobOptions.Previews"/>, <see cref="Job.Preview(PixelFormat?)"/>).</summary>
        public Func<int, Image[], bool> Preview { get; set; }
        /// <summary>Images that wrap seamlessly at their edges (textures, patterns): the U-Net and the VAE decoder
        /// run with circular padding. Generate, Img2Img, Inpaint and Interpolate. A set whose decoder does not make
        /// a whole number of pixels per latent cell (fashion: 8x8 latents, 28x28 images) refuses it
        /// (MirageException, Status.Unsupported). The first such call on a
        /// context prepares those sessions (about as long as loading the set) unless it was opened with
        /// <see cref="ContextOptions.Tileable"/>; a context opened with <see cref="Context.FromMemory(byte[], ContextOptions)"/>
        /// needs that option.</summary>
        public bool Tileable { get; set; }
        /// <summary>The initial noise instead of one drawn from <see cref="Seed"/> (null, the default): latents of
        /// the set's diffusion shape, one per image (Generate: Count; Img2Img, Inpaint: one per input image;
        /// Interpolate: exactly 1). Copied for the call. Denoise refuses it; stochastic sampling (Eta &gt; 0)
        /// still draws its later noise from Seed.</summary>
        public Latents Noise { get; set; }
    }

    /// <summary>Options of a <see cref="Context"/> (MirageContextParams); the defaults are the library's.</summary>
    public sealed class ContextOptions
    {
        public ContextOptions()
        {
            Workers = 1;
            MaxQueuedJobs = 64;
        }

        /// <summary>The provider of the context's sessions; Default = the runtime's.</summary>
        public Provider Provider { get; set; }
        /// <summary>Worker threads that run the context's jobs (<see cref="JobMode.Workers"/>), 1 to
        /// <see cref="Runtime.MaxWorkers"/>; default 1: one job at a time, in submission order. They start with
        /// the first job.</summary>
        public int Workers { get; set; }
        /// <summary>Jobs submitted and not yet started that the context holds, 1 to
        /// <see cref="Runtime.MaxQueuedJobs"/> (default 64); a submission beyond it throws MirageException with
        /// Status.Busy.</summary>
        public int MaxQueuedJobs { get; set; }
        /// <summary>Prepare the tileable sessions now (see <see cref="GenerateOptions.Tileable"/>); needed for
        /// tileable images from a context opened from memory. Default false.</summary>
        public bool Tileable { get; set; }
        /// <summary>The text encoder's precision: Fp32 (default) or Int8, its reduced export (34 MB instead of
        /// 90 MB, a faster start, embeddings within cosine 0.999 of Fp32's).</summary>
        public Precision Precision { get; set; }
    }

    /// <summary>MIRAGE_PRECISION_*: the precision of a context's text encoder.</summary>
    public enum Precision : uint
    {
        Fp32 = 0,
        Int8 = 1,
    }

    /// <summary>Options of a job (MirageJobParams).</summary>
    public sealed class JobOptions
    {
        /// <summary>Workers (default): the context's worker threads run it; Manual: <see cref="Job.Advance"/> does.</summary>
        public JobMode Mode { get; set; }
        /// <summary>Keep the latest estimate of the images after each step for <see cref="Job.Preview(PixelFormat?)"/>
        /// (one VAE decode a step). Default false.</summary>
        public bool Previews { get; set; }
    }

    /// <summary>Where a job is (<see cref="Job.Poll"/>): its state and the sampler steps done and in all (a VAE
    /// job has one step).</summary>
    public struct JobProgress
    {
        public JobProgress(JobState state, int step, int total)
        {
            State = state;
            Step = step;
            Total = total;
        }

        public JobState State { get; }
        /// <summary>Steps done.</summary>
        public int Step { get; }
        /// <summary>Steps in all.</summary>
        public int Total { get; }
        /// <summary>Done, Failed or Cancelled: the result (or the error) waits to be taken.</summary>
        public bool IsEnded { get { return State == JobState.Done || State == JobState.Failed || State == JobState.Cancelled; } }

        public override string ToString()
        {
            return State + " " + Step + "/" + Total;
        }
    }

    /// <summary>
    /// Memory of yours that one image is written into (a texture being uploaded, a frame buffer), with its
    /// layout (MirageTarget): <see cref="Width"/> x <see cref="Height"/> pixels of <see cref="Format"/>, rows
    /// <see cref="Stride"/> bytes apart, top row first unless <see cref="BottomUp"/>. The image is resized to
    /// that size with <see cref="Filter"/> and converted to that format; bytes between rows are left as they
    /// are. The buffer is pinned during the call only. Checked (here, then by the library) before a byte is
    /// written.
    /// </summary>
    public sealed class Target
    {
        /// <summary>A target over 8-bit pixels: <paramref name="format"/> Gray8, Rgb8, Rgba8 or Bgra8.</summary>
        public Target(byte[] pixels, int width, int height, PixelFormat format)
        {
            if (pixels == null) throw new ArgumentNullException("pixels");
            if (format == PixelFormat.Rgba32F)
                throw new ArgumentException("PixelFormat.Rgba32F needs a float[] target", "format");
            Init(pixels, width, height, format);
        }

        /// <summary>A target over floats: RGBA in linear light (<see cref="PixelFormat.Rgba32F"/>), 4 floats a pixel.</summary>
        public Target(float[] pixels, int width, int height)
        {
            if (pixels == null) throw new ArgumentNullException("pixels");
            Init(pixels, width, height, PixelFormat.Rgba32F);
        }

        private void Init(Array pixels, int width, int height, PixelFormat format)
        {
            BytesPerPixel(format);
            CheckSide(width, "width");
            CheckSide(height, "height");
            Buffer = pixels;
            Width = width;
            Height = height;
            Format = format;
        }

        /// <summary>The buffer: a byte[] (8-bit formats) or a float[] (Rgba32F).</summary>
        public Array Buffer { get; private set; }
        /// <summary>Pixels per row, 1 to <see cref="Runtime.MaxImageSide"/>; need not be the set's (resized).</summary>
        public int Width { get; private set; }
        /// <summary>Rows, 1 to <see cref="Runtime.MaxImageSide"/>.</summary>
        public int Height { get; private set; }
        public PixelFormat Format { get; private set; }
        /// <summary>Bytes (also for a float[]) from the start of one row to the next: 0 (default) = packed
        /// (Width * bytes per pixel), else at least that; a multiple of 4 for a float[].</summary>
        public int Stride { get; set; }
        /// <summary>Rows bottom to top (the buffer's first row is the image's last), as OpenGL and Unity textures.</summary>
        public bool BottomUp { get; set; }
        /// <summary>Colour multiplied by alpha (premultiplied alpha).</summary>
        public bool Premultiplied { get; set; }
        /// <summary>The resize filter when Width x Height is not the image's size (default Bilinear).</summary>
        public Filter Filter { get; set; }

        /// <summary>Bytes per pixel of a target format.</summary>
        public static int BytesPerPixel(PixelFormat format)
        {
            switch (format)
            {
                case PixelFormat.Gray8: return 1;
                case PixelFormat.Rgb8: return 3;
                case PixelFormat.Rgba8:
                case PixelFormat.Bgra8: return 4;
                case PixelFormat.Rgba32F: return 16;
                default: throw new ArgumentOutOfRangeException("format", format, "unknown pixel format");
            }
        }

        private static void CheckSide(int side, string name)
        {
            if (side < 1 || side > Runtime.MaxImageSide)
                throw new ArgumentOutOfRangeException(name, side, name + " must be 1 to " + Runtime.MaxImageSide);
        }

        /// <summary>The C struct for a call, the buffer pinned in <paramref name="pins"/>; every field checked
        /// first (ArgumentException naming <paramref name="name"/>).</summary>
        internal MirageTarget ToNative(string name, Pins pins)
        {
            CheckSide(Width, name + ".Width");
            CheckSide(Height, name + ".Height");
            int bpp = BytesPerPixel(Format);
            bool floats = Buffer is float[];
            if (floats != (Format == PixelFormat.Rgba32F))
                throw new ArgumentException(name + ": a float[] target takes PixelFormat.Rgba32F, a byte[] target the 8-bit formats", name);
            if (!Enum.IsDefined(typeof(Filter), Filter))
                throw new ArgumentOutOfRangeException(name, Filter, name + ".Filter is not a Filter value");
            long row = (long)Width * bpp;
            if (Stride < 0)
                throw new ArgumentOutOfRangeException(name, Stride, name + ".Stride must not be negative");
            long stride = Stride == 0 ? row : Stride;
            if (stride < row)
                throw new ArgumentException(string.Format("{0}.Stride is {1} bytes, less than a row of {2} pixels x {3} bytes ({4})",
                    name, Stride, Width, bpp, row), name);
            if (floats && stride % 4 != 0)
                throw new ArgumentException(name + ".Stride is " + Stride + ": a float[] target's rows start on a float (a multiple of 4 bytes)", name);
            long need = (Height - 1) * stride + row;
            long size = floats ? 4L * Buffer.Length : Buffer.Length;
            if (size < need)
                throw new ArgumentException(string.Format("{0} holds {1} bytes; {2}x{3} {4} with stride {5} needs {6}",
                    name, size, Width, Height, Format, stride, need), name);
            var t = new MirageTarget();
            t.data = pins.Pin(Buffer);
            t.size = (UIntPtr)(ulong)size;
            t.width = (uint)Width;
            t.height = (uint)Height;
            t.stride = (UIntPtr)(ulong)stride;
            t.format = (uint)Format;
            t.flags = (uint)((BottomUp ? TargetFlags.BottomUp : TargetFlags.None) | (Premultiplied ? TargetFlags.Premultiplied : TargetFlags.None));
            t.filter = (uint)Filter;
            return t;
        }
    }

    /// <summary>
    /// Images the library holds (MirageImageBatch), what jobs and <see cref="Context.GenerateAsync"/> give: all
    /// of one size and format. <see cref="ToImages"/> copies them out; <see cref="WriteInto"/> writes one
    /// straight into your buffer (resized, converted, flipped). Dispose frees the native images (a batch
    /// never disposed is freed by its finalizer).
    /// </summary>
    public sealed class ImageBatch : IDisposable
    {
        private readonly ImageBatchHandle handle;

        internal ImageBatch(ImageBatchHandle handle)
        {
            this.handle = handle;
            Count = checked((int)Native.mirage_image_batch_count(handle).ToUInt64());
            if (Count > 0)
            {
                MirageImage first;
                Interop.Check(Native.mirage_image_batch_get(handle, UIntPtr.Zero, out first));
                Width = (int)first.width;
                Height = (int)first.height;
                Format = (PixelFormat)first.format;
            }
        }

        public int Count { get; private set; }
        public int Width { get; private set; }
        public int Height { get; private set; }
        /// <summary>Gray8, Rgb8 or Rgba8.</summary>
        public PixelFormat Format { get; private set; }
        public bool IsDisposed { get { return handle.IsClosed; } }

        /// <summary>Image <paramref name="index"/>, copied.</summary>
        public Image this[int index]
        {
            get
            {
                Alive();
                CheckIndex(index);
                MirageImage image;
                Interop.Check(Native.mirage_image_batch_get(handle, (UIntPtr)index, out image));
                return Interop.Copy(image);
            }
        }

        /// <summary>Every image, copied.</summary>
        public Image[] ToImages()
        {
            Alive();
            return Interop.FromNative(handle);
        }

        /// <summary>Writes image <paramref name="index"/> into <paramref name="target"/> (mirage_image_batch_write):
        /// resized, converted (Rgba32F: the 8-bit sRGB pixels in linear light), in its row order and alpha mode.</summary>
        public void WriteInto(int index, Target target)
        {
            Alive();
            CheckIndex(index);
            if (target == null) throw new ArgumentNullException("target");
            using (var pins = new Pins())
            {
                var native = target.ToNative("target", pins);
                Interop.Check(Native.mirage_image_batch_write(handle, (UIntPtr)index, ref native));
            }
        }

        public void Dispose()
        {
            handle.Dispose();
        }

        private void CheckIndex(int index)
        {
            if (index < 0 || index >= Count)
                throw new ArgumentOutOfRangeException("index", index, "the batch holds " + Count + " images");
        }

        private void Alive()
        {
            if (handle.IsClosed) throw new ObjectDisposedException("Mirage.ImageBatch");
        }
    }

    /// <summary>
    /// A submitted operation (MirageJob), made by a Context's Submit* methods: run by the context's worker
    /// threads (<see cref="JobMode.Workers"/>) or stepped by <see cref="Advance"/> (<see cref="JobMode.Manual"/>).
    /// Any thread may poll, wait for, preview or cancel it. Its result is taken once (TakeImages, TakeInto or
    /// TakeLatents); a failed or cancelled job's take throws its error. It outlives its Context (a disposed
    /// context cancels its workers' jobs; manual jobs still run). Dispose frees it and cancels it if it has not
    /// ended (threads waiting on it return); afterwards every method throws ObjectDisposedException.
    /// </summary>
    public sealed class Job : IDisposable
    {
        /// <summary>MIRAGE_WAIT_FOREVER.</summary>
        internal const uint WaitForever = uint.MaxValue;

        private readonly JobHandle handle;

        internal Job(JobHandle handle, JobMode mode, PixelFormat format)
        {
            this.handle = handle;
            Mode = mode;
            Format = format;
        }

        public JobMode Mode { get; private set; }
        /// <summary>The format of its images and, by default, of its previews.</summary>
        public PixelFormat Format { get; private set; }
        public bool IsDisposed { get { return handle.IsClosed; } }

        /// <summary>Where the job is, without waiting (cheap: call it every frame).</summary>
        public JobProgress Poll()
        {
            Alive();
            uint state, step, total;
            Interop.Check(Native.mirage_job_poll(handle, out state, out step, out total));
            return new JobProgress((JobState)state, (int)step, (int)total);
        }

        /// <summary>Waits until the job has ended (done, failed or cancelled) or <paramref name="timeout"/> has
        /// passed (Timeout.InfiniteTimeSpan: no limit; TimeSpan.Zero: just look); true when it has ended. A
        /// manual job moves only while some thread advances it.</summary>
        public bool Wait(TimeSpan timeout)
        {
            Alive();
            uint ms;
            if (timeout == Timeout.InfiniteTimeSpan) ms = WaitForever;
            else if (timeout < TimeSpan.Zero)
                throw new ArgumentOutOfRangeException("timeout", timeout, "timeout must not be negative (or Timeout.InfiniteTimeSpan)");
            else ms = (uint)Math.Min(Math.Ceiling(timeout.TotalMilliseconds), WaitForever - 1.0);
            uint state;
            Interop.Check(Native.mirage_job_wait(handle, ms, out state));
            var s = (JobState)state;
            return s == JobState.Done || s == JobState.Failed || s == JobState.Cancelled;
        }

        /// <summary>Waits until the job has ended.</summary>
        public void Wait()
        {
            Wait(Timeout.InfiniteTimeSpan);
        }

        /// <summary>Cancels the job: a queued one ends at once, a running one within one step; its take then
        /// throws MirageException (Status.Cancelled). Nothing happens to an ended job. Any thread; never waits.</summary>
        public void Cancel()
        {
            Alive();
            Interop.Check(Native.mirage_job_cancel(handle));
        }

        /// <summary>Manual jobs: runs whole steps on the calling thread, at most <paramref name="maxSteps"/>, and no
        /// new step once <paramref name="budget"/> would be exceeded (judged by the previous step's duration;
        /// TimeSpan.Zero or Timeout.InfiniteTimeSpan = no time limit); at least one step when maxSteps &gt; 0 and
        /// the job has not ended. Returns the steps run. A failing step or a cancel ends the job (its take
        /// reports it), not this call. Stepped to its end, the job gives exactly the blocking call's images.</summary>
        public int Advance(int maxSteps, TimeSpan budget)
        {
            Alive();
            if (maxSteps < 0) throw new ArgumentOutOfRangeException("maxSteps", maxSteps, "maxSteps must not be negative");
            ulong us;
            if (budget == Timeout.InfiniteTimeSpan) us = 0;
            else if (budget < TimeSpan.Zero)
                throw new ArgumentOutOfRangeException("budget", budget, "budget must not be negative (or Timeout.InfiniteTimeSpan)");
            else us = (ulong)((budget.Ticks + 9) / 10); // whole microseconds, rounded up: 0 only for TimeSpan.Zero
            uint ran;
            Interop.Check(Native.mirage_job_advance(handle, (uint)maxSteps, us, out ran));
            return (int)ran;
        }

        /// <summary>The latest preview (jobs submitted with <see cref="JobOptions.Previews"/>): the estimate of the
        /// finished images in <paramref name="format"/> (null = the job's), or null when no step has run yet.</summary>
        public ImageBatch Preview(PixelFormat? format = null)
        {
            int step;
            return Preview(format, out step);
        }

        /// <summary>As <see cref="Preview(PixelFormat?)"/>, with the step the preview was made after (0 when null).</summary>
        public ImageBatch Preview(PixelFormat? format, out int step)
        {
            Alive();
            ImageBatchHandle batch;
            uint s;
            Interop.Check(Native.mirage_job_preview(handle, (uint)(format ?? Format), out batch, out s));
            step = (int)s;
            if (batch == null || batch.IsInvalid)
            {
                if (batch != null) batch.Dispose();
                return null;
            }
            return Interop.Batch(batch);
        }

        /// <summary>Takes the images of an ended job (not an encode job), once; throws the job's error for a
        /// failed or cancelled job (Status.Cancelled), and InvalidArgument before it has ended or when taken.</summary>
        public ImageBatch TakeImages()
        {
            Alive();
            ImageBatchHandle batch;
            Interop.Check(Native.mirage_job_take_images(handle, out batch));
            return Interop.Batch(batch);
        }

        /// <summary>Takes the latents of an ended encode job, once (as <see cref="TakeImages"/>).</summary>
        public LatentDistribution TakeLatents()
        {
            Alive();
            LatentHandle mean, logvar;
            Interop.Check(Native.mirage_job_take_latents(handle, out mean, out logvar));
            using (mean)
            using (logvar)
                return new LatentDistribution(Interop.FromNative(mean), Interop.FromNative(logvar));
        }

        /// <summary>Takes the images of an ended job straight into your buffers, one target per image, each with
        /// its own size, format, stride, row order, alpha mode and filter: the 8-bit sRGB pixels TakeImages would
        /// give, converted (Rgba32F: to linear light). Every target is checked first (here: ArgumentException; by the library: MirageException): when one is
        /// refused nothing is written and the result stays in the job for another take.</summary>
        public void TakeInto(params Target[] targets)
        {
            Alive();
            if (targets == null) throw new ArgumentNullException("targets");
            using (var pins = new Pins())
            {
                var native = new MirageTarget[targets.Length];
                for (int i = 0; i < targets.Length; i++)
                {
                    string name = "targets[" + i + "]";
                    if (targets[i] == null) throw new ArgumentNullException(name);
                    native[i] = targets[i].ToNative(name, pins);
                }
                Interop.Check(Native.mirage_job_take_into(handle, native, (UIntPtr)native.Length));
            }
        }

        /// <summary>Cancels the job if it has not ended (threads waiting on it or advancing it return within a
        /// step), then frees it once no call on it is running. Idempotent.</summary>
        public void Dispose()
        {
            if (!handle.IsClosed)
            {
                try
                {
                    Native.mirage_job_cancel(handle);
                }
                catch (ObjectDisposedException)
                {
                    // Disposed meanwhile by another thread.
                }
            }
            handle.Dispose();
        }

        private void Alive()
        {
            if (handle.IsClosed) throw new ObjectDisposedException("Mirage.Job");
        }
    }

    /// <summary>How ONNX Runtime is set up for the process (MirageRuntimeOptions); see <see cref="Runtime.Init"/>.</summary>
    public sealed class RuntimeOptions
    {
        public RuntimeOptions()
        {
            Provider = Provider.Auto;
            LogLevel = LogLevel.Warn;
        }

        /// <summary>Path of libonnxruntime, or null to search (ORT_DYLIB_PATH, beside libmirage and the
        /// executable, the project's .deps).</summary>
        public string OrtLibraryPath { get; set; }
        /// <summary>Default provider of every session (default Auto).</summary>
        public Provider Provider { get; set; }
        /// <summary>Fail instead of falling back to CPU when the provider is unavailable.</summary>
        public bool Strict { get; set; }
        /// <summary>Threads per session, 0 (ONNX Runtime's default: one per core) to 256.</summary>
        public int IntraThreads { get; set; }
        /// <summary>Receives the log lines; null = warnings and errors to stderr. Runs on any thread (ONNX
        /// Runtime's workers too), must be quick and thread-safe; what it throws is dropped. Kept until the
        /// next successful Init.</summary>
        public Action<LogLevel, string> Log { get; set; }
        /// <summary>The lowest level delivered (default Warn).</summary>
        public LogLevel LogLevel { get; set; }
        /// <summary>TensorRT: build fp16 engines.</summary>
        public bool TensorRtFp16 { get; set; }
        /// <summary>TensorRT: folder for the engine and timing caches; null = none.</summary>
        public string TensorRtCacheDir { get; set; }
        /// <summary>Folder of the load cache: verified model-file digests, so that unchanged files are not
        /// hashed again by later processes, and (on CPU) each model's optimized graph; null (the default) =
        /// hash and optimize on every load.</summary>
        public string DigestCacheDir { get; set; }
        /// <summary>Keep encoded prompts in DigestCacheDir's prompts/ (needs DigestCacheDir): a prompt drawn
        /// before is not encoded again, and a context loads its text encoder only when a prompt is not
        /// there. The entries are embeddings of the prompts, not their text. Default false.</summary>
        public bool PromptCache { get; set; }
        /// <summary>On CUDA, capture the U-Net's steps as a CUDA graph per batch shape and replay them
        /// (MIRAGE_RUNTIME_CUDA_GRAPH; no effect on TensorRT or the CPU).</summary>
        public bool CudaGraph { get; set; }
    }

    /// <summary>Process-wide things: the library's version, names of statuses and providers, and the
    /// optional ONNX Runtime setup.</summary>
    public static class Runtime
    {
        /// <summary>The header version this binding was written against (MIRAGE_VERSION_STRING).</summary>
        public const string BindingVersion = "0.1.0";
        /// <summary>MIRAGE_MAX_BATCH: the most images, latents, frames or prompts one call takes.</summary>
        public const int MaxBatch = 1024;
        /// <summary>MIRAGE_MAX_STEPS.</summary>
        public const int MaxSteps = 1000;
        /// <summary>MIRAGE_MAX_GUIDANCE.</summary>
        public const float MaxGuidance = 50.0f;
        /// <summary>MIRAGE_MAX_THREADS.</summary>
        public const int MaxThreads = 256;
        /// <summary>MIRAGE_RUNTIME_CUDA_GRAPH, the bit RuntimeOptions.CudaGraph sets in the native options' flags.</summary>
        public const ulong RuntimeCudaGraph = 1;
        /// <summary>MIRAGE_GUIDANCE_DEFAULT: the set's own guidance.</summary>
        public const float GuidanceDefault = -1.0f;
        /// <summary>MIRAGE_MAX_WORKERS: the most worker threads of a context (<see cref="ContextOptions.Workers"/>).</summary>
        public const int MaxWorkers = 64;
        /// <summary>MIRAGE_MAX_QUEUED_JOBS: the most jobs not yet started a context holds (<see cref="ContextOptions.MaxQueuedJobs"/>).</summary>
        public const int MaxQueuedJobs = 4096;
        /// <summary>MIRAGE_MAX_IMAGE_SIDE: the longest side of a <see cref="Target"/>, in pixels.</summary>
        public const int MaxImageSide = 4096;

        /// <summary>.NET Core 3+ / .NET 5+ only (Godot 4): the path of the native library, read when the
        /// first call loads it; null = MIRAGE_LIBRARY_PATH, else the runtime's usual search. Ignored by
        /// mono and Unity (use a dllmap, LD_LIBRARY_PATH or Assets/Plugins).</summary>
        public static string LibraryPath { get; set; }

        /// <summary>The loaded library's version ("MAJOR.MINOR.PATCH"): compare with <see cref="BindingVersion"/>.</summary>
        public static string Version
        {
            get { return Utf8.FromNative(Native.mirage_version()); }
        }

        /// <summary>A short description of a status, e.g. "invalid argument".</summary>
        public static string StatusName(Status status)
        {
            return Utf8.FromNative(Native.mirage_status_str((uint)status));
        }

        /// <summary>"default", "auto", "tensorrt", "cuda", "cpu" or "unknown".</summary>
        public static string ProviderName(Provider provider)
        {
            return Utf8.FromNative(Native.mirage_provider_name((uint)provider));
        }

        /// <summary>Loads ONNX Runtime with these options (mirage_runtime_init). Optional: without it the first
        /// Context loads it with the defaults. Call it once, before the first Context; again with the same
        /// runtime options it only replaces the log callback and level, with others it throws
        /// MirageException (Status.RuntimeAlreadyInitialised).</summary>
        public static void Init(RuntimeOptions options)
        {
            if (options == null) throw new ArgumentNullException("options");
            if (options.IntraThreads < 0)
                throw new ArgumentOutOfRangeException("options", options.IntraThreads, "IntraThreads must not be negative");
            var native = new MirageRuntimeOptions();
            Interop.Check(Native.mirage_runtime_options_init(ref native, Interop.SizeOf<MirageRuntimeOptions>()));
            using (var pins = new Pins())
            {
                native.ort_library_path = options.OrtLibraryPath == null
                    ? IntPtr.Zero : pins.Pin(Utf8.ToNative(options.OrtLibraryPath, "OrtLibraryPath"));
                native.tensorrt_cache_dir = options.TensorRtCacheDir == null
                    ? IntPtr.Zero : pins.Pin(Utf8.ToNative(options.TensorRtCacheDir, "TensorRtCacheDir"));
                native.digest_cache_dir = options.DigestCacheDir == null
                    ? IntPtr.Zero : pins.Pin(Utf8.ToNative(options.DigestCacheDir, "DigestCacheDir"));
                native.provider = (uint)options.Provider;
                native.strict = options.Strict ? (byte)1 : (byte)0;
                native.intra_threads = (uint)options.IntraThreads;
                native.log_level = (uint)options.LogLevel;
                native.tensorrt_fp16 = options.TensorRtFp16 ? (byte)1 : (byte)0;
                native.prompt_cache = options.PromptCache ? (byte)1 : (byte)0;
                native.flags = options.CudaGraph ? Runtime.RuntimeCudaGraph : 0UL;
                native.log_callback = options.Log == null ? IntPtr.Zero : Callbacks.LogPointer;
                native.log_user_data = IntPtr.Zero;
                lock (Callbacks.LogLock)
                {
                    var previous = Callbacks.Log;
                    Callbacks.Log = options.Log;
                    uint status = Native.mirage_runtime_init(ref native);
                    if (status != 0)
                    {
                        var error = Interop.Error(status);
                        Callbacks.Log = previous;
                        throw error;
                    }
                }
            }
        }
    }

    /// <summary>
    /// A loaded model set (MirageContext). Thread-safe: share one Context between threads. Dispose frees it:
    /// generations running on other threads are cancelled (they throw MirageException with Status.Cancelled),
    /// the native context is freed once the last running call has returned, and every later call throws
    /// ObjectDisposedException.
    /// </summary>
    public sealed class Context : IDisposable
    {
        private readonly ContextHandle handle;
        private readonly int channels;

        /// <summary>Opens the model set in <paramref name="modelsDir"/> (its manifest.json, checking every
        /// file's sha256), or a pack file made by <c>mirage pack</c>. <paramref name="provider"/> Default = the
        /// runtime's.</summary>
        public Context(string modelsDir, Provider provider = Provider.Default)
            : this(Open(modelsDir, new ContextOptions { Provider = provider }, "modelsDir"))
        {
        }

        /// <summary>Opens the model set at <paramref name="path"/>: a model-set directory or a pack file made by
        /// <c>mirage pack</c> (the library tells them apart), with <paramref name="options"/> (null = the defaults).</summary>
        public Context(string path, ContextOptions options)
            : this(Open(path, options, "path"))
        {
        }

        /// <summary>Opens a model pack (the file <c>mirage pack</c> writes) held in memory, e.g. an asset of your
        /// own archive. The bytes are pinned during the call only: nothing points into them afterwards. A
        /// truncated, corrupted or foreign pack throws MirageException (Status.InvalidModel) saying what is
        /// wrong. Set <see cref="ContextOptions.Tileable"/> to make tileable images with it.</summary>
        public static Context FromMemory(byte[] data, ContextOptions options = null)
        {
            if (data == null) throw new ArgumentNullException("data");
            return FromMemory(data, 0, data.Length, options);
        }

        /// <summary>As <see cref="FromMemory(byte[], ContextOptions)"/>, from <paramref name="count"/> bytes of
        /// <paramref name="data"/> at <paramref name="offset"/>.</summary>
        public static Context FromMemory(byte[] data, int offset, int count, ContextOptions options = null)
        {
            if (data == null) throw new ArgumentNullException("data");
            if (offset < 0 || offset > data.Length)
                throw new ArgumentOutOfRangeException("offset", offset, "offset must be within data");
            if (count < 0 || count > data.Length - offset)
                throw new ArgumentOutOfRangeException("count", count, "count must fit in data after offset");
            if (count == 0) throw new ArgumentException("data is empty: a model pack is needed", "data");
            var p = Params(options);
            ContextHandle h;
            var pin = GCHandle.Alloc(data, GCHandleType.Pinned);
            try
            {
                IntPtr start = new IntPtr(pin.AddrOfPinnedObject().ToInt64() + offset);
                Interop.Check(Native.mirage_context_new_from_memory(start, (UIntPtr)(uint)count, ref p, out h));
            }
            finally
            {
                pin.Free();
            }
            return new Context(h);
        }

#if NETCOREAPP2_1_OR_GREATER || NETSTANDARD2_1_OR_GREATER || UNITY_2021_2_OR_NEWER || __MonoCS__
        /// <summary>As <see cref="FromMemory(byte[], ContextOptions)"/>, from a span (a slice of a bigger buffer,
        /// native memory); pinned during the call only. Where ReadOnlySpan exists (.NET Core 2.1+, .NET Standard
        /// 2.1, Unity 2021.2+, mono).</summary>
        public static Context FromMemory(ReadOnlySpan<byte> data, ContextOptions options = null)
        {
            if (data.IsEmpty) throw new ArgumentException("data is empty: a model pack is needed", "data");
            var p = Params(options);
            ContextHandle h;
            // A byref argument to a P/Invoke is pinned for the call: no unsafe code needed.
            Interop.Check(Native.mirage_context_new_from_memory(ref MemoryMarshal.GetReference(data),
                (UIntPtr)(uint)data.Length, ref p, out h));
            return new Context(h);
        }
#endif

        private static ContextHandle Open(string path, ContextOptions options, string name)
        {
            if (path == null) throw new ArgumentNullException(name);
            byte[] dir = Utf8.ToNative(path, name);
            var p = Params(options);
            ContextHandle h;
            Interop.Check(Native.mirage_context_new(dir, ref p, out h));
            return h;
        }

        private static MirageContextParams Params(ContextOptions o)
        {
            o = o ?? new ContextOptions();
            if (o.Workers < 0) throw new ArgumentOutOfRangeException("options", o.Workers, "Workers must not be negative");
            if (o.MaxQueuedJobs < 0)
                throw new ArgumentOutOfRangeException("options", o.MaxQueuedJobs, "MaxQueuedJobs must not be negative");
            var p = new MirageContextParams();
            Interop.Check(Native.mirage_context_params_init(ref p, Interop.SizeOf<MirageContextParams>()));
            p.provider = (uint)o.Provider;
            p.workers = (uint)o.Workers;
            p.max_queued_jobs = (uint)o.MaxQueuedJobs;
            p.tileable = o.Tileable ? (byte)1 : (byte)0;
            p.precision = (uint)o.Precision;
            return p;
        }

        private Context(ContextHandle h)
        {
            try
            {
                uint w, ht, c;
                Interop.Check(Native.mirage_context_image_size(h, out w, out ht, out c));
                channels = (int)c;
            }
            catch
            {
                h.Dispose();
                throw;
            }
            handle = h;
        }

        /// <summary>True once Dispose has been called.</summary>
        public bool IsDisposed { get { return handle.IsClosed; } }

        /// <summary>Cancels running generations (see the class), then frees the context. Idempotent.</summary>
        public void Dispose()
        {
            if (!handle.IsClosed)
            {
                try
                {
                    Native.mirage_context_cancel(handle);
                }
                catch (ObjectDisposedException)
                {
                    // Disposed meanwhile by another thread.
                }
            }
            handle.Dispose();
        }

        /// <summary>Name, image size, latent shape, providers and text shape of the set.</summary>
        public ContextInfo Info
        {
            get
            {
                Alive();
                var info = new ContextInfo();
                uint w, h, c;
                Interop.Check(Native.mirage_context_image_size(handle, out w, out h, out c));
                info.Width = (int)w;
                info.Height = (int)h;
                info.Channels = (int)c;

                UIntPtr needed;
                Interop.Check(Native.mirage_context_name(handle, null, UIntPtr.Zero, out needed));
                var name = new byte[(int)needed.ToUInt64() + 1];
                Interop.Check(Native.mirage_context_name(handle, name, (UIntPtr)name.Length, out needed));
                info.Name = Encoding.UTF8.GetString(name, 0, Math.Min((int)needed.ToUInt64(), name.Length - 1));

                var shape = new uint[3];
                uint status = Native.mirage_context_latent_shape(handle, shape);
                if (status == (uint)Status.Ok) info.LatentShape = new[] { (int)shape[0], (int)shape[1], (int)shape[2] };
                else if (status != (uint)Status.Unsupported) throw Interop.Error(status);
                if (info.LatentShape != null)
                {
                    bool sampleable;
                    Interop.Check(Native.mirage_context_prior_sampleable(handle, out sampleable));
                    info.PriorSampleable = sampleable;
                }

                var providers = new Dictionary<ModelKind, Provider>();
                foreach (ModelKind kind in new[] { ModelKind.VaeEncoder, ModelKind.VaeDecoder, ModelKind.Unet, ModelKind.TextEncoder })
                {
                    uint provider;
                    status = Native.mirage_context_provider(handle, (uint)kind, out provider);
                    if (status == (uint)Status.Ok) providers[kind] = (Provider)provider;
                    else if (status != (uint)Status.Unsupported) throw Interop.Error(status);
                }
                info.Providers = providers;
                info.Text = TextShapeOrNull();
                return info;
            }
        }

        /// <summary>Cancels every generation running on this context, from any thread (also from inside a
        /// callback): each throws MirageException (Status.Cancelled) within one step. Generations that start
        /// afterwards run normally. Also cancels every job of the context's workers, queued or running (not
        /// manual jobs: cancel those with <see cref="Job.Cancel"/>).</summary>
        public void Cancel()
        {
            Alive();
            Interop.Check(Native.mirage_context_cancel(handle));
        }

        /// <summary>Generates options.Count images from noise (null options = the defaults).</summary>
        public Image[] Generate(GenerateOptions options = null)
        {
            Alive();
            options = options ?? new GenerateOptions();
            var h = handle;
            using (var pins = new Pins())
                return Diffuse(options, pins, (ref MirageDiffusionParams p, out ImageBatchHandle b) =>
                    Native.mirage_generate(h, ref p, out b));
        }

        /// <summary>Re-imagines each image: pushed options.Strength of the way into noise (set it, e.g. 0.5 to
        /// 0.8), then denoised. One result per input, in order. Images must have the set's size and channels.</summary>
        public Image[] Img2Img(Image[] images, GenerateOptions options)
        {
            Alive();
            if (options == null) throw new ArgumentNullException("options");
            var h = handle;
            using (var pins = new Pins())
            {
                var native = Interop.ToNative(images, "images", pins);
                return Diffuse(options, pins, (ref MirageDiffusionParams p, out ImageBatchHandle b) =>
                    Native.mirage_img2img(h, native, (UIntPtr)native.Length, ref p, out b));
            }
        }

        /// <summary>Removes noise from each image without adding any: options.Strength is the input's noise
        /// level (0.05 to 0.2 for mild noise).</summary>
        public Image[] Denoise(Image[] images, GenerateOptions options)
        {
            Alive();
            if (options == null) throw new ArgumentNullException("options");
            var h = handle;
            using (var pins = new Pins())
            {
                var native = Interop.ToNative(images, "images", pins);
                return Diffuse(options, pins, (ref MirageDiffusionParams p, out ImageBatchHandle b) =>
                    Native.mirage_denoise(h, native, (UIntPtr)native.Length, ref p, out b));
            }
        }

        /// <summary>Fills the masked region of each image: masks are 1-channel images of the same size, 255 =
        /// invent, 0 = keep (comes back unchanged when the result format is the images'), between = blend.
        /// options.Strength is usually 1.</summary>
        public Image[] Inpaint(Image[] images, Image[] masks, GenerateOptions options)
        {
            Alive();
            if (options == null) throw new ArgumentNullException("options");
            if (images == null) throw new ArgumentNullException("images");
            if (masks == null) throw new ArgumentNullException("masks");
            if (images.Length != masks.Length)
                throw new ArgumentException(string.Format("{0} images but {1} masks: one mask per image is needed",
                    images.Length, masks.Length), "masks");
            var h = handle;
            using (var pins = new Pins())
            {
                var nativeImages = Interop.ToNative(images, "images", pins);
                var nativeMasks = Interop.ToNative(masks, "masks", pins);
                return Diffuse(options, pins, (ref MirageDiffusionParams p, out ImageBatchHandle b) =>
                    Native.mirage_inpaint(h, nativeImages, nativeMasks, (UIntPtr)nativeImages.Length, ref p, out b));
            }
        }

        /// <summary>Morphs between prompts (text-conditioned sets): <paramref name="frames"/> images along the path
        /// through <paramref name="prompts"/> (at least 2), all from the same noise (options.Seed). options.Prompt
        /// is ignored; options.Count is the frames per U-Net batch.</summary>
        public Image[] Interpolate(string[] prompts, int frames, GenerateOptions options)
        {
            Alive();
            if (prompts == null) throw new ArgumentNullException("prompts");
            if (options == null) throw new ArgumentNullException("options");
            if (frames < 0) throw new ArgumentOutOfRangeException("frames", frames, "frames must not be negative");
            var h = handle;
            using (var pins = new Pins())
            {
                var pointers = PromptPointers(prompts, pins);
                return Diffuse(options, pins, (ref MirageDiffusionParams p, out ImageBatchHandle b) =>
                    Native.mirage_interpolate(h, pointers, (UIntPtr)pointers.Length, (uint)frames, ref p, out b));
            }
        }

        /// <summary>Embeds a prompt with the set's text encoder ("" is the unconditional prompt): the pooled,
        /// L2-normalised embedding, and the token embeddings when <paramref name="withTokens"/>.</summary>
        public TextEmbedding Embed(string prompt, bool withTokens = false)
        {
            Alive();
            if (prompt == null) throw new ArgumentNullException("prompt");
            byte[] text = Utf8.ToNative(prompt, "prompt");
            TextShape shape = TextShape();
            var pooled = new float[shape.Width];
            float[] tokens = withTokens ? new float[shape.Tokens * shape.Width] : null;
            Interop.Check(Native.mirage_text_embed(handle, text, pooled, (UIntPtr)pooled.Length,
                tokens, (UIntPtr)(tokens == null ? 0 : tokens.Length)));
            return new TextEmbedding(pooled, tokens, shape);
        }

        /// <summary>The text conditioning; throws MirageException (Status.Unsupported) for a set without text.</summary>
        public TextShape TextShape()
        {
            Alive();
            uint tokens, width;
            Interop.Check(Native.mirage_context_text_shape(handle, out tokens, out width));
            return new TextShape((int)tokens, (int)width);
        }

        /// <summary>Encodes images (the set's size and channels) into the latent distribution of each.</summary>
        public LatentDistribution Encode(params Image[] images)
        {
            Alive();
            using (var pins = new Pins())
            {
                var native = Interop.ToNative(images, "images", pins);
                LatentHandle mean, logvar;
                Interop.Check(Native.mirage_vae_encode(handle, native, (UIntPtr)native.Length, out mean, out logvar));
                using (mean)
                using (logvar)
                    return new LatentDistribution(Interop.FromNative(mean), Interop.FromNative(logvar));
            }
        }

        /// <summary>Draws one latent per item from the distributions: mean + exp(logvar / 2) * noise(seed).</summary>
        public Latents Sample(Latents mean, Latents logvar, ulong seed)
        {
            Alive();
            if (mean == null) throw new ArgumentNullException("mean");
            if (logvar == null) throw new ArgumentNullException("logvar");
            using (var m = Interop.ToNative(mean))
            using (var l = Interop.ToNative(logvar))
            {
                LatentHandle z;
                Interop.Check(Native.mirage_vae_sample(handle, m, l, seed, out z));
                using (z)
                    return Interop.FromNative(z);
            }
        }

        /// <summary>Draws <paramref name="count"/> points of the prior N(0, I): decode them for new images.</summary>
        public Latents SamplePrior(int count, ulong seed)
        {
            Alive();
            if (count < 0) throw new ArgumentOutOfRangeException("count", count, "count must not be negative");
            LatentHandle z;
            Interop.Check(Native.mirage_vae_sample_prior(handle, (UIntPtr)count, seed, out z));
            using (z)
                return Interop.FromNative(z);
        }

        /// <summary>Decodes latents into images of <paramref name="format"/> (null = the set's own channels).</summary>
        public Image[] Decode(Latents latents, PixelFormat? format = null)
        {
            Alive();
            if (latents == null) throw new ArgumentNullException("latents");
            using (var l = Interop.ToNative(latents))
            {
                ImageBatchHandle batch;
                Interop.Check(Native.mirage_vae_decode(handle, l, (uint)(format ?? Image.FormatOf(channels)), out batch));
                using (batch)
                    return Interop.FromNative(batch);
            }
        }

        /// <summary>Decodes latents straight into <paramref name="targets"/>' pixels (one image of the set's size
        /// per latent, any channels); nothing is written unless it all succeeds.</summary>
        public void DecodeInto(Latents latents, Image[] targets)
        {
            Alive();
            if (latents == null) throw new ArgumentNullException("latents");
            using (var pins = new Pins())
            {
                var native = Interop.ToNative(targets, "targets", pins);
                using (var l = Interop.ToNative(latents))
                    Interop.Check(Native.mirage_vae_decode_into(handle, l, native, (UIntPtr)native.Length));
            }
        }

        private TextShape TextShapeOrNull()
        {
            uint tokens, width;
            uint status = Native.mirage_context_text_shape(handle, out tokens, out width);
            if (status == (uint)Status.Unsupported) return null;
            if (status != (uint)Status.Ok) throw Interop.Error(status);
            return new TextShape((int)tokens, (int)width);
        }

        private void Alive()
        {
            if (handle.IsClosed) throw new ObjectDisposedException("Mirage.Context");
        }

        private delegate uint DiffuseCall(ref MirageDiffusionParams p, out ImageBatchHandle batch);

        /// <summary>Runs a diffusion call with <paramref name="o"/> as C params; rethrows what a callback threw,
        /// else throws on failure.</summary>
        private Image[] Diffuse(GenerateOptions o, Pins pins, DiffuseCall call)
        {
            var p = DiffusionParams(o, pins);

            // Lifetimes during the call: the function pointers are those of static delegates held for the life
            // of the process (Callbacks); the user's delegates are reached through `state`, which a GCHandle keeps
            // (its IntPtr is user_data) and GC.KeepAlive holds to the end of the call; strings and pixels are
            // pinned in `pins` by the caller until it returns, and so is the native copy of Noise.
            var state = new CallState(o);
            GCHandle stateHandle = GCHandle.Alloc(state);
            ImageBatchHandle batch = null;
            try
            {
                p.progress = o.Progress == null ? IntPtr.Zero : Callbacks.ProgressPointer;
                p.preview = o.Preview == null ? IntPtr.Zero : Callbacks.PreviewPointer;
                p.user_data = GCHandle.ToIntPtr(stateHandle);
                uint status = call(ref p, out batch);
                GC.KeepAlive(state);
                GC.KeepAlive(o);
                if (state.Error != null) ExceptionDispatchInfo.Capture(state.Error).Throw();
                Interop.Check(status);
                return Interop.FromNative(batch);
            }
            finally
            {
                stateHandle.Free();
                if (batch != null) batch.Dispose();
            }
        }

        /// <summary><paramref name="o"/> as C params, without callbacks: strings pinned and the noise made
        /// native in <paramref name="pins"/>, which the caller disposes after the call.</summary>
        private MirageDiffusionParams DiffusionParams(GenerateOptions o, Pins pins)
        {
            if (o.Steps < 0) throw new ArgumentOutOfRangeException("options", o.Steps, "Steps must not be negative");
            if (o.Count < 0) throw new ArgumentOutOfRangeException("options", o.Count, "Count must not be negative");
            var p = new MirageDiffusionParams();
            Interop.Check(Native.mirage_diffusion_params_init(ref p, Interop.SizeOf<MirageDiffusionParams>()));
            p.steps = (uint)o.Steps;
            p.sampler = o.Sampler == null ? IntPtr.Zero : pins.Pin(Utf8.ToNative(o.Sampler, "Sampler"));
            p.eta = o.Eta;
            p.seed = o.Seed;
            p.count = (uint)o.Count;
            p.strength = o.Strength;
            p.format = (uint)(o.Format ?? Image.FormatOf(channels));
            p.prompt = o.Prompt == null ? IntPtr.Zero : pins.Pin(Utf8.ToNative(o.Prompt, "Prompt"));
            p.negative_prompt = o.Negative == null ? IntPtr.Zero : pins.Pin(Utf8.ToNative(o.Negative, "Negative"));
            p.guidance = o.Guidance;
            p.tileable = o.Tileable ? (byte)1 : (byte)0;
            // The MirageLatent handle pointer: made here, owned by `pins`, freed after the call.
            p.noise = o.Noise == null ? IntPtr.Zero : pins.Own(Interop.ToNative(o.Noise));
            return p;
        }

        // ---- jobs ----

        /// <summary>Submits Generate as a job (null options = the defaults; null job = workers, no previews).
        /// Returns at once; the arguments are checked now (MirageException), MirageException with Status.Busy when
        /// the context's queue is full. Progress and Preview callbacks do not apply: poll the job.</summary>
        public Job SubmitGenerate(GenerateOptions options = null, JobOptions job = null)
        {
            Alive();
            options = options ?? new GenerateOptions();
            var h = handle;
            using (var pins = new Pins())
                return SubmitDiffusion(options, job, pins, (ref MirageDiffusionParams p, ref MirageJobParams j, out JobHandle out_) =>
                    Native.mirage_job_generate(h, ref p, ref j, out out_));
        }

        /// <summary>Submits Img2Img as a job (the images are read now).</summary>
        public Job SubmitImg2Img(Image[] images, GenerateOptions options, JobOptions job = null)
        {
            Alive();
            if (options == null) throw new ArgumentNullException("options");
            var h = handle;
            using (var pins = new Pins())
            {
                var native = Interop.ToNative(images, "images", pins);
                return SubmitDiffusion(options, job, pins, (ref MirageDiffusionParams p, ref MirageJobParams j, out JobHandle out_) =>
                    Native.mirage_job_img2img(h, native, (UIntPtr)native.Length, ref p, ref j, out out_));
            }
        }

        /// <summary>Submits Denoise as a job (the images are read now).</summary>
        public Job SubmitDenoise(Image[] images, GenerateOptions options, JobOptions job = null)
        {
            Alive();
            if (options == null) throw new ArgumentNullException("options");
            var h = handle;
            using (var pins = new Pins())
            {
                var native = Interop.ToNative(images, "images", pins);
                return SubmitDiffusion(options, job, pins, (ref MirageDiffusionParams p, ref MirageJobParams j, out JobHandle out_) =>
                    Native.mirage_job_denoise(h, native, (UIntPtr)native.Length, ref p, ref j, out out_));
            }
        }

        /// <summary>Submits Inpaint as a job (images and masks are read now).</summary>
        public Job SubmitInpaint(Image[] images, Image[] masks, GenerateOptions options, JobOptions job = null)
        {
            Alive();
            if (options == null) throw new ArgumentNullException("options");
            if (images == null) throw new ArgumentNullException("images");
            if (masks == null) throw new ArgumentNullException("masks");
            if (images.Length != masks.Length)
                throw new ArgumentException(string.Format("{0} images but {1} masks: one mask per image is needed",
                    images.Length, masks.Length), "masks");
            var h = handle;
            using (var pins = new Pins())
            {
                var nativeImages = Interop.ToNative(images, "images", pins);
                var nativeMasks = Interop.ToNative(masks, "masks", pins);
                return SubmitDiffusion(options, job, pins, (ref MirageDiffusionParams p, ref MirageJobParams j, out JobHandle out_) =>
                    Native.mirage_job_inpaint(h, nativeImages, nativeMasks, (UIntPtr)nativeImages.Length, ref p, ref j, out out_));
            }
        }

        /// <summary>Submits Interpolate as a job (the prompts are encoded now).</summary>
        public Job SubmitInterpolate(string[] prompts, int frames, GenerateOptions options, JobOptions job = null)
        {
            Alive();
            if (prompts == null) throw new ArgumentNullException("prompts");
            if (options == null) throw new ArgumentNullException("options");
            if (frames < 0) throw new ArgumentOutOfRangeException("frames", frames, "frames must not be negative");
            var h = handle;
            using (var pins = new Pins())
            {
                var pointers = PromptPointers(prompts, pins);
                return SubmitDiffusion(options, job, pins, (ref MirageDiffusionParams p, ref MirageJobParams j, out JobHandle out_) =>
                    Native.mirage_job_interpolate(h, pointers, (UIntPtr)pointers.Length, (uint)frames, ref p, ref j, out out_));
            }
        }

        /// <summary>Submits Encode as a job of one step (the images are read now); take its result with
        /// <see cref="Job.TakeLatents"/>.</summary>
        public Job SubmitEncode(Image[] images, JobOptions job = null)
        {
            Alive();
            using (var pins = new Pins())
            {
                var native = Interop.ToNative(images, "images", pins);
                var j = JobParams(job);
                JobHandle out_;
                Interop.Check(Native.mirage_job_encode(handle, native, (UIntPtr)native.Length, ref j, out out_));
                return new Job(out_, (JobMode)j.mode, PixelFormat.Rgba8);
            }
        }

        /// <summary>Submits Decode as a job of one step (the latents are copied now); images in
        /// <paramref name="format"/> (null = the set's own channels).</summary>
        public Job SubmitDecode(Latents latents, PixelFormat? format = null, JobOptions job = null)
        {
            Alive();
            if (latents == null) throw new ArgumentNullException("latents");
            var f = format ?? Image.FormatOf(channels);
            var j = JobParams(job);
            using (var l = Interop.ToNative(latents))
            {
                JobHandle out_;
                Interop.Check(Native.mirage_job_decode(handle, l, (uint)f, ref j, out out_));
                return new Job(out_, (JobMode)j.mode, f);
            }
        }

        // ---- Tasks: a workers job, awaited ----

        /// <summary>Generate as a Task: a workers job whose end a background thread waits for (no polling). The
        /// Task gives the images (dispose the batch, or let its finalizer free it); it is cancelled when
        /// <paramref name="cancellationToken"/> cancels the job (or Cancel/Dispose of the context does), and faults
        /// with the job's MirageException when a step fails. Bad arguments and a full queue (Status.Busy) throw
        /// here, before a Task exists.</summary>
        public Task<ImageBatch> GenerateAsync(GenerateOptions options = null, CancellationToken cancellationToken = default(CancellationToken))
        {
            if (cancellationToken.IsCancellationRequested) return Task.FromCanceled<ImageBatch>(cancellationToken);
            return JobTask.Run(SubmitGenerate(options), j => j.TakeImages(), cancellationToken);
        }

        /// <summary>Img2Img as a Task (see <see cref="GenerateAsync"/>).</summary>
        public Task<ImageBatch> Img2ImgAsync(Image[] images, GenerateOptions options, CancellationToken cancellationToken = default(CancellationToken))
        {
            if (cancellationToken.IsCancellationRequested) return Task.FromCanceled<ImageBatch>(cancellationToken);
            return JobTask.Run(SubmitImg2Img(images, options), j => j.TakeImages(), cancellationToken);
        }

        /// <summary>Denoise as a Task (see <see cref="GenerateAsync"/>).</summary>
        public Task<ImageBatch> DenoiseAsync(Image[] images, GenerateOptions options, CancellationToken cancellationToken = default(CancellationToken))
        {
            if (cancellationToken.IsCancellationRequested) return Task.FromCanceled<ImageBatch>(cancellationToken);
            return JobTask.Run(SubmitDenoise(images, options), j => j.TakeImages(), cancellationToken);
        }

        /// <summary>Inpaint as a Task (see <see cref="GenerateAsync"/>).</summary>
        public Task<ImageBatch> InpaintAsync(Image[] images, Image[] masks, GenerateOptions options,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            if (cancellationToken.IsCancellationRequested) return Task.FromCanceled<ImageBatch>(cancellationToken);
            return JobTask.Run(SubmitInpaint(images, masks, options), j => j.TakeImages(), cancellationToken);
        }

        /// <summary>Interpolate as a Task (see <see cref="GenerateAsync"/>).</summary>
        public Task<ImageBatch> InterpolateAsync(string[] prompts, int frames, GenerateOptions options,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            if (cancellationToken.IsCancellationRequested) return Task.FromCanceled<ImageBatch>(cancellationToken);
            return JobTask.Run(SubmitInterpolate(prompts, frames, options), j => j.TakeImages(), cancellationToken);
        }

        /// <summary>Encode as a Task (see <see cref="GenerateAsync"/>).</summary>
        public Task<LatentDistribution> EncodeAsync(Image[] images, CancellationToken cancellationToken = default(CancellationToken))
        {
            if (cancellationToken.IsCancellationRequested) return Task.FromCanceled<LatentDistribution>(cancellationToken);
            return JobTask.Run(SubmitEncode(images), j => j.TakeLatents(), cancellationToken);
        }

        /// <summary>Decode as a Task (see <see cref="GenerateAsync"/>).</summary>
        public Task<ImageBatch> DecodeAsync(Latents latents, PixelFormat? format = null,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            if (cancellationToken.IsCancellationRequested) return Task.FromCanceled<ImageBatch>(cancellationToken);
            return JobTask.Run(SubmitDecode(latents, format), j => j.TakeImages(), cancellationToken);
        }

        private delegate uint SubmitCall(ref MirageDiffusionParams p, ref MirageJobParams job, out JobHandle handle);

        private Job SubmitDiffusion(GenerateOptions o, JobOptions jo, Pins pins, SubmitCall call)
        {
            if (o.Progress != null || o.Preview != null)
                throw new ArgumentException("Progress and Preview callbacks do not apply to jobs: poll the job "
                    + "(Job.Poll) and read its previews (JobOptions.Previews, Job.Preview)", "options");
            var p = DiffusionParams(o, pins);
            var j = JobParams(jo);
            JobHandle h;
            Interop.Check(call(ref p, ref j, out h));
            return new Job(h, (JobMode)j.mode, (PixelFormat)p.format);
        }

        private static MirageJobParams JobParams(JobOptions o)
        {
            o = o ?? new JobOptions();
            var j = new MirageJobParams();
            Interop.Check(Native.mirage_job_params_init(ref j, Interop.SizeOf<MirageJobParams>()));
            j.mode = (uint)o.Mode;
            j.previews = o.Previews ? (byte)1 : (byte)0;
            return j;
        }

        private static IntPtr[] PromptPointers(string[] prompts, Pins pins)
        {
            var pointers = new IntPtr[prompts.Length];
            for (int i = 0; i < prompts.Length; i++)
            {
                string name = "prompts[" + i + "]";
                if (prompts[i] == null) throw new ArgumentNullException(name);
                pointers[i] = pins.Pin(Utf8.ToNative(prompts[i], name));
            }
            return pointers;
        }
    }

    /// <summary>A workers job as a Task: a background thread waits for its end (mirage_job_wait, no polling),
    /// takes the result and frees the job; a cancellation token's registration cancels the job.</summary>
    internal static class JobTask
    {
        internal static Task<T> Run<T>(Job job, Func<Job, T> take, CancellationToken cancellationToken)
        {
            var tcs = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
            var registration = default(CancellationTokenRegistration);
            Thread waiter;
            try
            {
                if (cancellationToken.CanBeCanceled) registration = cancellationToken.Register(CancelJob, job);
                waiter = new Thread(() =>
                {
                    T result = default(T);
                    Exception error = null;
                    bool cancelled = false;
                    try
                    {
                        job.Wait();
                        result = take(job);
                    }
                    catch (MirageException e) when (e.Status == Status.Cancelled)
                    {
                        cancelled = true;
                    }
                    catch (Exception e)
                    {
                        error = e;
                    }
                    // Waits for a registration callback running now, so that none touches the freed job.
                    registration.Dispose();
                    job.Dispose();
                    if (cancelled)
                    {
                        if (cancellationToken.IsCancellationRequested) tcs.TrySetCanceled(cancellationToken);
                        else tcs.TrySetCanceled();
                    }
                    else if (error != null) tcs.TrySetException(error);
                    else tcs.TrySetResult(result);
                });
                waiter.IsBackground = true;
                waiter.Name = "mirage job";
                waiter.Start();
            }
            catch
            {
                registration.Dispose();
                job.Dispose();
                throw;
            }
            return tcs.Task;
        }

        private static void CancelJob(object job)
        {
            try
            {
                ((Job)job).Cancel();
            }
            catch (Exception)
            {
                // Ended and freed meanwhile: nothing to cancel.
            }
        }
    }

    // ---- interop: everything below is the binding's plumbing ----

    /// <summary>The state of one diffusion call, reached from the native callbacks through user_data.</summary>
    internal sealed class CallState
    {
        internal CallState(GenerateOptions options)
        {
            Options = options;
        }

        internal readonly GenerateOptions Options;
        /// <summary>The first exception a callback threw; the call rethrows it.</summary>
        internal Exception Error;
    }

#if !UNITY_5_3_OR_NEWER
    /// <summary>Marks the static methods native code calls back, for AOT compilers (Unity's IL2CPP, Xamarin);
    /// in Unity the file uses AOT.MonoPInvokeCallbackAttribute instead (see the using at the top).</summary>
    [AttributeUsage(AttributeTargets.Method)]
    internal sealed class MonoPInvokeCallbackAttribute : Attribute
    {
        public MonoPInvokeCallbackAttribute(Type type)
        {
            Type = type;
        }

        public Type Type { get; private set; }
    }
#endif

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    internal delegate byte ProgressCallback(uint step, uint total, IntPtr userData);

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    internal delegate byte PreviewCallback(uint step, IntPtr images, UIntPtr count, IntPtr userData);

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    internal delegate void LogCallback(uint level, IntPtr message, IntPtr userData);

    /// <summary>The native callbacks: static methods (as IL2CPP needs), their delegates held for the life of
    /// the process, so the function pointers never dangle. Nothing thrown leaves them.</summary>
    internal static class Callbacks
    {
        private static readonly ProgressCallback ProgressDelegate = OnProgress;
        private static readonly PreviewCallback PreviewDelegate = OnPreview;
        private static readonly LogCallback LogDelegate = OnLog;
        internal static readonly IntPtr ProgressPointer = Marshal.GetFunctionPointerForDelegate<ProgressCallback>(ProgressDelegate);
        internal static readonly IntPtr PreviewPointer = Marshal.GetFunctionPointerForDelegate<PreviewCallback>(PreviewDelegate);
        internal static readonly IntPtr LogPointer = Marshal.GetFunctionPointerForDelegate<LogCallback>(LogDelegate);

        internal static readonly object LogLock = new object();
        internal static volatile Action<LogLevel, string> Log;

        [MonoPInvokeCallback(typeof(ProgressCallback))]
        private static byte OnProgress(uint step, uint total, IntPtr userData)
        {
            CallState state = null;
            try
            {
                state = (CallState)GCHandle.FromIntPtr(userData).Target;
                if (state.Error != null) return 0;
                return state.Options.Progress((int)step, (int)total) ? (byte)1 : (byte)0;
            }
            catch (Exception e)
            {
                if (state != null && state.Error == null) state.Error = e;
                return 0;
            }
        }

        [MonoPInvokeCallback(typeof(PreviewCallback))]
        private static byte OnPreview(uint step, IntPtr images, UIntPtr count, IntPtr userData)
        {
            CallState state = null;
            try
            {
                state = (CallState)GCHandle.FromIntPtr(userData).Target;
                if (state.Error != null) return 0;
                int n = checked((int)count.ToUInt64());
                int size = Marshal.SizeOf<MirageImage>();
                var copies = new Image[n];
                for (int i = 0; i < n; i++)
                {
                    var image = Marshal.PtrToStructure<MirageImage>(new IntPtr(images.ToInt64() + (long)i * size));
                    copies[i] = Interop.Copy(image);
                }
                return state.Options.Preview((int)step, copies) ? (byte)1 : (byte)0;
            }
            catch (Exception e)
            {
                if (state != null && state.Error == null) state.Error = e;
                return 0;
            }
        }

        [MonoPInvokeCallback(typeof(LogCallback))]
        private static void OnLog(uint level, IntPtr message, IntPtr userData)
        {
            try
            {
                var log = Log;
                if (log != null) log((LogLevel)level, Utf8.FromNative(message));
            }
            catch
            {
                // A log callback may run on a native worker thread: nothing may escape it.
            }
        }
    }

    /// <summary>UTF-8 both ways, by hand (mono's default string marshalling is not UTF-8 everywhere).</summary>
    internal static class Utf8
    {
        private static readonly UTF8Encoding Strict = new UTF8Encoding(false, true);

        /// <summary><paramref name="s"/> as NUL-terminated UTF-8; a NUL inside or a lone surrogate is refused.</summary>
        internal static byte[] ToNative(string s, string name)
        {
            if (s == null) throw new ArgumentNullException(name);
            int nul = s.IndexOf('\0');
            if (nul >= 0)
                throw new ArgumentException(name + " contains a NUL character (at index " + nul + ")", name);
            try
            {
                var bytes = new byte[Strict.GetByteCount(s) + 1];
                Strict.GetBytes(s, 0, s.Length, bytes, 0);
                return bytes;
            }
            catch (EncoderFallbackException e)
            {
                throw new ArgumentException(name + " is not valid UTF-16 (a lone surrogate)", name, e);
            }
        }

        /// <summary>A NUL-terminated UTF-8 string owned by the library; "" for NULL.</summary>
        internal static string FromNative(IntPtr p)
        {
            if (p == IntPtr.Zero) return "";
            int n = 0;
            while (Marshal.ReadByte(p, n) != 0) n++;
            var bytes = new byte[n];
            Marshal.Copy(p, bytes, 0, n);
            return Encoding.UTF8.GetString(bytes);
        }
    }

    /// <summary>Pinned managed buffers, and native objects made for one call, for the duration of the call.</summary>
    internal sealed class Pins : IDisposable
    {
        private readonly List<GCHandle> handles = new List<GCHandle>();
        private readonly List<SafeHandle> owned = new List<SafeHandle>();

        internal IntPtr Pin(object o)
        {
            var h = GCHandle.Alloc(o, GCHandleType.Pinned);
            handles.Add(h);
            return h.AddrOfPinnedObject();
        }

        /// <summary>The raw pointer of a handle made for this call only (nobody else can free it), freed with
        /// the pins.</summary>
        internal IntPtr Own(SafeHandle h)
        {
            owned.Add(h);
            return h.DangerousGetHandle();
        }

        public void Dispose()
        {
            foreach (var h in handles) h.Free();
            handles.Clear();
            foreach (var h in owned) h.Dispose();
            owned.Clear();
        }
    }

    internal static class Interop
    {
        internal static UIntPtr SizeOf<T>() where T : struct
        {
            return (UIntPtr)Marshal.SizeOf<T>();
        }

        /// <summary>The calling thread's last error (call it right after the failing call, on its thread).</summary>
        internal static string LastError()
        {
            ulong n = Native.mirage_last_error(null, UIntPtr.Zero).ToUInt64();
            var buf = new byte[n + 1];
            ulong m = Native.mirage_last_error(buf, (UIntPtr)buf.Length).ToUInt64();
            return Encoding.UTF8.GetString(buf, 0, (int)Math.Min(m, n));
        }

        internal static MirageException Error(uint status)
        {
            return new MirageException((Status)status, LastError());
        }

        internal static void Check(uint status)
        {
            if (status != (uint)Status.Ok) throw Error(status);
        }

        /// <summary>Host images for a call: checks them, pins their pixels (in <paramref name="pins"/>).</summary>
        internal static MirageImage[] ToNative(Image[] images, string name, Pins pins)
        {
            if (images == null) throw new ArgumentNullException(name);
            var native = new MirageImage[images.Length];
            for (int i = 0; i < images.Length; i++)
            {
                var image = images[i];
                if (image == null) throw new ArgumentNullException(name + "[" + i + "]");
                if (image.Pixels.Length != image.Width * image.Height * image.Channels)
                    throw new ArgumentException(name + "[" + i + "] has the wrong number of pixels", name);
                native[i].width = (uint)image.Width;
                native[i].height = (uint)image.Height;
                native[i].stride = (uint)(image.Width * image.Channels);
                native[i].format = (uint)image.Format;
                native[i].data = pins.Pin(image.Pixels);
            }
            return native;
        }

        /// <summary>A copy of pixels the library owns (any stride).</summary>
        internal static Image Copy(MirageImage n)
        {
            int channels = Image.ChannelsOf((PixelFormat)n.format);
            var image = new Image((int)n.width, (int)n.height, channels);
            int row = image.Width * channels;
            long stride = n.stride == 0 ? (long)row : (long)n.stride;
            if (stride == row) Marshal.Copy(n.data, image.Pixels, 0, image.Pixels.Length);
            else
                for (int y = 0; y < image.Height; y++)
                    Marshal.Copy(new IntPtr(n.data.ToInt64() + y * stride), image.Pixels, y * row, row);
            return image;
        }

        /// <summary>A public batch over <paramref name="batch"/> (freed if that fails).</summary>
        internal static ImageBatch Batch(ImageBatchHandle batch)
        {
            try
            {
                return new ImageBatch(batch);
            }
            catch
            {
                batch.Dispose();
                throw;
            }
        }

        internal static Image[] FromNative(ImageBatchHandle batch)
        {
            int count = checked((int)Native.mirage_image_batch_count(batch).ToUInt64());
            var images = new Image[count];
            for (int i = 0; i < count; i++)
            {
                MirageImage image;
                Check(Native.mirage_image_batch_get(batch, (UIntPtr)i, out image));
                images[i] = Copy(image);
            }
            return images;
        }

        internal static LatentHandle ToNative(Latents latents)
        {
            var shape = new[] { (uint)latents.Count, (uint)latents.Channels, (uint)latents.Height, (uint)latents.Width };
            LatentHandle h;
            Check(Native.mirage_latent_new(latents.Data, (UIntPtr)latents.Data.Length, shape, out h));
            return h;
        }

        internal static Latents FromNative(LatentHandle latent)
        {
            var shape = new uint[4];
            Check(Native.mirage_latent_shape(latent, shape));
            IntPtr data;
            UIntPtr len;
            Check(Native.mirage_latent_data(latent, out data, out len));
            var floats = new float[checked((int)len.ToUInt64())];
            if (floats.Length > 0) Marshal.Copy(data, floats, 0, floats.Length);
            return new Latents(floats, (int)shape[0], (int)shape[1], (int)shape[2], (int)shape[3]);
        }
    }

    // ---- the C structs: sequential layout with C's own field types and order (size_t = UIntPtr, pointers
    // and function pointers = IntPtr, bool = byte), so that they are blittable and match the header on 32- and
    // 64-bit targets alike (fixed FieldOffsets would be right for 64-bit only). Field names are the header's:
    // tests/layout.awk and `MirageTests.exe --layout` check every size and offset against the C compiler. ----

    [StructLayout(LayoutKind.Sequential)]
    internal struct MirageRuntimeOptions
    {
        public UIntPtr struct_size;
        public IntPtr ort_library_path;
        public uint provider;
        public byte strict;
        public uint intra_threads;
        public IntPtr log_callback;
        public IntPtr log_user_data;
        public uint log_level;
        public byte tensorrt_fp16;
        public IntPtr tensorrt_cache_dir;
        public IntPtr digest_cache_dir;
        public byte prompt_cache;
        public ulong flags;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct MirageContextParams
    {
        public UIntPtr struct_size;
        public uint provider;
        public uint workers;
        public uint max_queued_jobs;
        public byte tileable;
        public uint precision;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct MirageImage
    {
        public uint width;
        public uint height;
        public uint stride;
        public uint format;
        public IntPtr data;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct MirageDiffusionParams
    {
        public UIntPtr struct_size;
        public uint steps;
        public IntPtr sampler;
        public float eta;
        public ulong seed;
        public uint count;
        public float strength;
        public IntPtr progress;
        public IntPtr preview;
        public IntPtr user_data;
        public uint format;
        public IntPtr prompt;
        public IntPtr negative_prompt;
        public float guidance;
        public byte tileable;
        public IntPtr noise;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct MirageTarget
    {
        public IntPtr data;
        public UIntPtr size;
        public uint width;
        public uint height;
        public UIntPtr stride;
        public uint format;
        public uint flags;
        public uint filter;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct MirageJobParams
    {
        public UIntPtr struct_size;
        public uint mode;
        public byte previews;
    }

    internal sealed class ContextHandle : SafeHandleZeroOrMinusOneIsInvalid
    {
        public ContextHandle() : base(true)
        {
        }

        protected override bool ReleaseHandle()
        {
            Native.mirage_context_free(handle);
            return true;
        }
    }

    internal sealed class LatentHandle : SafeHandleZeroOrMinusOneIsInvalid
    {
        public LatentHandle() : base(true)
        {
        }

        protected override bool ReleaseHandle()
        {
            Native.mirage_latent_free(handle);
            return true;
        }
    }

    internal sealed class ImageBatchHandle : SafeHandleZeroOrMinusOneIsInvalid
    {
        public ImageBatchHandle() : base(true)
        {
        }

        protected override bool ReleaseHandle()
        {
            Native.mirage_image_batch_free(handle);
            return true;
        }
    }

    internal sealed class JobHandle : SafeHandleZeroOrMinusOneIsInvalid
    {
        public JobHandle() : base(true)
        {
        }

        protected override bool ReleaseHandle()
        {
            Native.mirage_job_free(handle);
            return true;
        }
    }

    /// <summary>The C API, one declaration per function of mirage.h.</summary>
    internal static class Native
    {
        private const string Lib = "mirage";

        static Native()
        {
#if NETCOREAPP3_0_OR_GREATER
            try
            {
                NativeLibrary.SetDllImportResolver(typeof(Native).Assembly, (name, assembly, searchPath) =>
                {
                    if (name != Lib) return IntPtr.Zero;
                    string path = Runtime.LibraryPath ?? Environment.GetEnvironmentVariable("MIRAGE_LIBRARY_PATH");
                    return string.IsNullOrEmpty(path) ? IntPtr.Zero : NativeLibrary.Load(path);
                });
            }
            catch (InvalidOperationException)
            {
                // The host has set its own resolver for this assembly: it decides.
            }
#endif
        }

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern IntPtr mirage_status_str(uint status);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern UIntPtr mirage_last_error([Out] byte[] buf, UIntPtr len);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern IntPtr mirage_version();

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern IntPtr mirage_provider_name(uint provider);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_runtime_options_init(ref MirageRuntimeOptions options, UIntPtr structSize);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_runtime_init(ref MirageRuntimeOptions options);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_context_params_init(ref MirageContextParams p, UIntPtr structSize);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_context_new([In] byte[] modelDir, ref MirageContextParams p, out ContextHandle ctx);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_context_new_from_memory(IntPtr data, UIntPtr size, ref MirageContextParams p,
            out ContextHandle ctx);

        /// <summary>The same function for a span: the byref is pinned for the call.</summary>
        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_context_new_from_memory(ref byte data, UIntPtr size, ref MirageContextParams p,
            out ContextHandle ctx);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern void mirage_context_free(IntPtr ctx);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_context_cancel(ContextHandle ctx);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_context_image_size(ContextHandle ctx, out uint width, out uint height, out uint channels);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_context_latent_shape(ContextHandle ctx, [Out] uint[] shape);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_context_prior_sampleable(ContextHandle ctx, [MarshalAs(UnmanagedType.I1)] out bool sampleable);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_context_provider(ContextHandle ctx, uint kind, out uint provider);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_context_name(ContextHandle ctx, [Out] byte[] buf, UIntPtr len, out UIntPtr needed);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern UIntPtr mirage_image_batch_count(ImageBatchHandle batch);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_image_batch_get(ImageBatchHandle batch, UIntPtr index, out MirageImage image);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_image_batch_write(ImageBatchHandle batch, UIntPtr index, ref MirageTarget target);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern void mirage_image_batch_free(IntPtr batch);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_latent_new([In] float[] data, UIntPtr len, [In] uint[] shape, out LatentHandle latent);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_latent_shape(LatentHandle latent, [Out] uint[] shape);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_latent_data(LatentHandle latent, out IntPtr data, out UIntPtr len);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern void mirage_latent_free(IntPtr latent);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_vae_encode(ContextHandle ctx, [In] MirageImage[] images, UIntPtr count,
            out LatentHandle mean, out LatentHandle logvar);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_vae_sample(ContextHandle ctx, LatentHandle mean, LatentHandle logvar, ulong seed,
            out LatentHandle latent);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_vae_sample_prior(ContextHandle ctx, UIntPtr count, ulong seed, out LatentHandle latent);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_vae_decode(ContextHandle ctx, LatentHandle latents, uint format, out ImageBatchHandle batch);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_vae_decode_into(ContextHandle ctx, LatentHandle latents, [In] MirageImage[] images, UIntPtr count);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_diffusion_params_init(ref MirageDiffusionParams p, UIntPtr structSize);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_generate(ContextHandle ctx, ref MirageDiffusionParams p, out ImageBatchHandle batch);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_img2img(ContextHandle ctx, [In] MirageImage[] images, UIntPtr count,
            ref MirageDiffusionParams p, out ImageBatchHandle batch);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_denoise(ContextHandle ctx, [In] MirageImage[] images, UIntPtr count,
            ref MirageDiffusionParams p, out ImageBatchHandle batch);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_inpaint(ContextHandle ctx, [In] MirageImage[] images, [In] MirageImage[] masks,
            UIntPtr count, ref MirageDiffusionParams p, out ImageBatchHandle batch);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_interpolate(ContextHandle ctx, [In] IntPtr[] prompts, UIntPtr promptCount,
            uint frames, ref MirageDiffusionParams p, out ImageBatchHandle batch);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_context_text_shape(ContextHandle ctx, out uint tokens, out uint width);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_text_embed(ContextHandle ctx, [In] byte[] prompt, [Out] float[] pooled,
            UIntPtr pooledLen, [Out] float[] tokenEmbeddings, UIntPtr tokensLen);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_job_params_init(ref MirageJobParams p, UIntPtr structSize);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_job_generate(ContextHandle ctx, ref MirageDiffusionParams p, ref MirageJobParams jobParams,
            out JobHandle job);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_job_img2img(ContextHandle ctx, [In] MirageImage[] images, UIntPtr count,
            ref MirageDiffusionParams p, ref MirageJobParams jobParams, out JobHandle job);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_job_denoise(ContextHandle ctx, [In] MirageImage[] images, UIntPtr count,
            ref MirageDiffusionParams p, ref MirageJobParams jobParams, out JobHandle job);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_job_inpaint(ContextHandle ctx, [In] MirageImage[] images, [In] MirageImage[] masks,
            UIntPtr count, ref MirageDiffusionParams p, ref MirageJobParams jobParams, out JobHandle job);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_job_interpolate(ContextHandle ctx, [In] IntPtr[] prompts, UIntPtr promptCount,
            uint frames, ref MirageDiffusionParams p, ref MirageJobParams jobParams, out JobHandle job);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_job_encode(ContextHandle ctx, [In] MirageImage[] images, UIntPtr count,
            ref MirageJobParams jobParams, out JobHandle job);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_job_decode(ContextHandle ctx, LatentHandle latents, uint format,
            ref MirageJobParams jobParams, out JobHandle job);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_job_poll(JobHandle job, out uint state, out uint step, out uint total);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_job_wait(JobHandle job, uint timeoutMs, out uint state);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_job_cancel(JobHandle job);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_job_advance(JobHandle job, uint maxSteps, ulong budgetUs, out uint stepsRun);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_job_preview(JobHandle job, uint format, out ImageBatchHandle batch, out uint step);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_job_take_images(JobHandle job, out ImageBatchHandle batch);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_job_take_latents(JobHandle job, out LatentHandle mean, out LatentHandle logvar);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern uint mirage_job_take_into(JobHandle job, [In] MirageTarget[] targets, UIntPtr count);

        [DllImport(Lib, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern void mirage_job_free(IntPtr job);
    }
}
