// Tests of the C# binding (bindings/csharp/Mirage.cs), compiled together with it by mcs and run by mono:
//
//     MirageTests.exe MODELS_DIR        every method on MODELS_DIR/fashion and MODELS_DIR/fashion-text (and a
//                                       smoke test on MODELS_DIR/emoji when it exists), determinism,
//                                       cancellation, callbacks that throw, bad input, Dispose semantics; jobs
//                                       (workers, manual, previews, Busy), Tasks, targets, tileable images, and
//                                       packs from $MIRAGE_TEST_PACKS (fashion.mirage, emoji.mirage) when set
//     MirageTests.exe --layout FILE     FILE = the output of the C program tests/layout.awk makes from
//                                       mirage.h: checks every struct size, field offset and constant
//
// Plain Main, no test framework: one line per failed check, a summary, exit status 0 only when all passed.
// run-tests.sh builds and runs both.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using Mirage;

internal static class MirageTests
{
    private static int passed, failed;
    private static readonly string Nothing = null;
    private static readonly bool Verbose = Environment.GetEnvironmentVariable("MIRAGE_TEST_VERBOSE") == "1";

    private static void Check(bool ok, string what)
    {
        if (ok) passed++;
        else
        {
            failed++;
            Console.WriteLine("FAIL: " + what);
        }
    }

    private static void Equal<T>(T expected, T actual, string what)
    {
        bool ok = EqualityComparer<T>.Default.Equals(expected, actual);
        Check(ok, what + ": expected " + expected + ", got " + actual);
    }

    /// <summary>Runs <paramref name="action"/>, which must throw exactly <typeparamref name="T"/>.</summary>
    private static T Throws<T>(string what, Action action) where T : Exception
    {
        try
        {
            action();
        }
        catch (Exception e)
        {
            if (e.GetType() == typeof(T))
            {
                passed++;
                if (Verbose) Console.WriteLine("  ok " + what + ": " + e.GetType().Name + ": " + e.Message);
                return (T)e;
            }
            failed++;
            Console.WriteLine("FAIL: " + what + ": expected " + typeof(T).Name + ", got " + e.GetType().Name + ": " + e.Message);
            return null;
        }
        failed++;
        Console.WriteLine("FAIL: " + what + ": expected " + typeof(T).Name + ", nothing thrown");
        return null;
    }

    /// <summary>The call must throw MirageException with <paramref name="status"/> and the library's
    /// (non-empty) message, which contains <paramref name="contains"/> when given (case-insensitive).</summary>
    private static void Fails(Status status, string what, Action action, string contains = null)
    {
        var e = Throws<MirageException>(what, action);
        if (e == null) return;
        Equal(status, e.Status, what + ": status");
        Check(!string.IsNullOrEmpty(e.Detail), what + ": the library's message is empty");
        Check(e.Message.Contains(e.Detail), what + ": Message lacks the library's message");
        if (contains != null)
            Check(e.Detail.IndexOf(contains, StringComparison.OrdinalIgnoreCase) >= 0,
                what + ": message \"" + e.Detail + "\" lacks \"" + contains + "\"");
    }

    /// <summary>Runs one group of checks; an unexpected exception fails the group, the run goes on.</summary>
    private static void Test(string name, Action body)
    {
        var clock = Stopwatch.StartNew();
        int before = failed;
        try
        {
            body();
        }
        catch (Exception e)
        {
            failed++;
            Console.WriteLine("FAIL: " + name + ": unexpected " + e);
        }
        Console.WriteLine(string.Format("{0} {1} ({2} ms)", failed == before ? "ok  " : "FAIL", name, clock.ElapsedMilliseconds));
    }

    private static bool Same(Image a, Image b)
    {
        return a.Width == b.Width && a.Height == b.Height && a.Channels == b.Channels && a.Pixels.SequenceEqual(b.Pixels);
    }

    private static bool Same(Image[] a, Image[] b)
    {
        return a.Length == b.Length && a.Zip(b, (x, y) => Same(x, y)).All(s => s);
    }

    private static double MeanAbsDiff(byte[] a, byte[] b)
    {
        double sum = 0;
        for (int i = 0; i < a.Length; i++) sum += Math.Abs(a[i] - b[i]);
        return sum / a.Length;
    }

    private static int Main(string[] args)
    {
        if (args.Length == 2 && args[0] == "--layout") return Layout(args[1]);
        if (args.Length != 1)
        {
            Console.Error.WriteLine("usage: MirageTests.exe MODELS_DIR | --layout FILE");
            return 2;
        }
        var total = Stopwatch.StartNew();
        Run(args[0]);
        Console.WriteLine(string.Format("time: {0:F1} s", total.Elapsed.TotalSeconds));
        Console.WriteLine(string.Format("{0} passed, {1} failed", passed, failed));
        return failed == 0 ? 0 : 1;
    }

    // ---- struct layout and constants against the C compiler's view of mirage.h ----

    private static int Layout(string file)
    {
        Assembly binding = typeof(Context).Assembly;
        var fieldsSeen = new Dictionary<string, int>();
        foreach (string raw in File.ReadAllLines(file))
        {
            string line = raw.Trim();
            if (line.Length == 0) continue;
            string[] parts = line.Split(' ');
            if (parts[0] == "const")
            {
                string value = Constant(parts[1]);
                Check(value == parts[2], "constant " + parts[1] + ": C says " + parts[2] + ", the binding " + (value ?? "nothing"));
                continue;
            }
            if (parts.Length == 3 && parts[1] == "size")
            {
                Type t = binding.GetType("Mirage." + parts[0]);
                if (t == null)
                {
                    Check(false, "struct " + parts[0] + " is missing from Mirage.cs");
                    continue;
                }
                int size = Marshal.SizeOf(t);
                Console.WriteLine(parts[0] + " size " + size);
                Check(size.ToString(CultureInfo.InvariantCulture) == parts[2], "sizeof " + parts[0] + ": C " + parts[2] + ", C# " + size);
                Check(t.IsValueType && t.IsLayoutSequential, parts[0] + " is not a sequential struct");
                fieldsSeen[parts[0]] = 0;
                continue;
            }
            string[] name = parts[0].Split('.');
            Type s = binding.GetType("Mirage." + name[0]);
            FieldInfo f = s == null ? null : s.GetField(name[1], BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic);
            if (f == null)
            {
                Check(false, "field " + parts[0] + " is missing from Mirage.cs");
                continue;
            }
            long offset = Marshal.OffsetOf(s, name[1]).ToInt64();
            Console.WriteLine(parts[0] + " " + offset);
            Check(offset.ToString(CultureInfo.InvariantCulture) == parts[1], "offsetof " + parts[0] + ": C " + parts[1] + ", C# " + offset);
            fieldsSeen[name[0]]++;
        }
        foreach (var kv in fieldsSeen)
        {
            int fields = binding.GetType("Mirage." + kv.Key).GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic).Length;
            Check(fields == kv.Value, kv.Key + ": C has " + kv.Value + " fields, C# " + fields);
        }
        Check(fieldsSeen.Count >= 4, "fewer than 4 structs in the C output");
        Console.WriteLine(string.Format("layout: {0} passed, {1} failed", passed, failed));
        return failed == 0 ? 0 : 1;
    }

    /// <summary>The binding's value of a MIRAGE_* constant, formatted as C's %g; null when it has none.</summary>
    private static string Constant(string c)
    {
        string[] version = Mirage.Runtime.BindingVersion.Split('.');
        switch (c)
        {
            case "MIRAGE_VERSION_MAJOR": return version[0];
            case "MIRAGE_VERSION_MINOR": return version[1];
            case "MIRAGE_VERSION_PATCH": return version[2];
            case "MIRAGE_VERSION_STRING": return Mirage.Runtime.BindingVersion;
            case "MIRAGE_MAX_BATCH": return Mirage.Runtime.MaxBatch.ToString(CultureInfo.InvariantCulture);
            case "MIRAGE_MAX_STEPS": return Mirage.Runtime.MaxSteps.ToString(CultureInfo.InvariantCulture);
            case "MIRAGE_MAX_GUIDANCE": return Mirage.Runtime.MaxGuidance.ToString(CultureInfo.InvariantCulture);
            case "MIRAGE_MAX_THREADS": return Mirage.Runtime.MaxThreads.ToString(CultureInfo.InvariantCulture);
            case "MIRAGE_RUNTIME_CUDA_GRAPH": return FormatG(Mirage.Runtime.RuntimeCudaGraph);
            case "MIRAGE_GUIDANCE_DEFAULT": return Mirage.Runtime.GuidanceDefault.ToString(CultureInfo.InvariantCulture);
            case "MIRAGE_MAX_WORKERS": return Mirage.Runtime.MaxWorkers.ToString(CultureInfo.InvariantCulture);
            case "MIRAGE_MAX_QUEUED_JOBS": return Mirage.Runtime.MaxQueuedJobs.ToString(CultureInfo.InvariantCulture);
            case "MIRAGE_MAX_IMAGE_SIDE": return Mirage.Runtime.MaxImageSide.ToString(CultureInfo.InvariantCulture);
            case "MIRAGE_WAIT_FOREVER": return FormatG(Job.WaitForever);
            case "MIRAGE_OK": return ((uint)Status.Ok).ToString(CultureInfo.InvariantCulture);
        }
        var prefixes = new[]
        {
            Tuple.Create("MIRAGE_ERR_", typeof(Status)), Tuple.Create("MIRAGE_PROVIDER_", typeof(Provider)),
            Tuple.Create("MIRAGE_LOG_", typeof(LogLevel)), Tuple.Create("MIRAGE_MODEL_", typeof(ModelKind)),
            Tuple.Create("MIRAGE_PIXEL_", typeof(PixelFormat)), Tuple.Create("MIRAGE_FILTER_", typeof(Filter)),
            Tuple.Create("MIRAGE_TARGET_", typeof(TargetFlags)), Tuple.Create("MIRAGE_JOB_", typeof(JobMode)),
            Tuple.Create("MIRAGE_JOB_", typeof(JobState)), Tuple.Create("MIRAGE_PRECISION_", typeof(Precision)),
        };
        foreach (var p in prefixes)
        {
            if (!c.StartsWith(p.Item1, StringComparison.Ordinal)) continue;
            string member = c.Substring(p.Item1.Length).Replace("_", "");
            foreach (string n in Enum.GetNames(p.Item2))
                if (string.Equals(n, member, StringComparison.OrdinalIgnoreCase))
                    return FormatG(Convert.ToUInt32(Enum.Parse(p.Item2, n)));
        }
        return null;
    }

    /// <summary>A whole number as C's printf("%g") writes it: 6 significant digits, exponent form from 1e6.</summary>
    private static string FormatG(double v)
    {
        if (Math.Abs(v) < 1e6) return v.ToString("0.#####", CultureInfo.InvariantCulture);
        return v.ToString("0.#####e+00", CultureInfo.InvariantCulture);
    }

    // ---- the library ----

    private static void Run(string models)
    {
        string fashionDir = Path.Combine(models, "fashion");
        string textDir = Path.Combine(models, "fashion-text");
        string emojiDir = Path.Combine(models, "emoji");
        // The folder of the pack files run-tests.sh made (fashion.mirage, emoji.mirage), if any.
        string packs = Environment.GetEnvironmentVariable("MIRAGE_TEST_PACKS") ?? "";
        var logs = new List<string>();

        Test("runtime: version, names, Init", () =>
        {
            Equal(Mirage.Runtime.BindingVersion, Mirage.Runtime.Version, "library version");
            Equal("invalid argument", Mirage.Runtime.StatusName(Status.InvalidArgument), "StatusName");
            Equal("unknown status", Mirage.Runtime.StatusName((Status)999), "StatusName of an unknown value");
            Equal("cpu", Mirage.Runtime.ProviderName(Provider.Cpu), "ProviderName");
            Equal("unknown", Mirage.Runtime.ProviderName((Provider)99), "ProviderName of an unknown value");
            Throws<ArgumentNullException>("Init(null)", () => Mirage.Runtime.Init(null));
            Throws<ArgumentException>("Init with a NUL in OrtLibraryPath",
                () => Mirage.Runtime.Init(new RuntimeOptions { OrtLibraryPath = "/x\0y" }));
            Throws<ArgumentOutOfRangeException>("Init with IntraThreads -1",
                () => Mirage.Runtime.Init(new RuntimeOptions { IntraThreads = -1 }));
            var options = new RuntimeOptions
            {
                Provider = Provider.Cpu,
                IntraThreads = 2,
                LogLevel = LogLevel.Info,
                Log = (level, message) => { lock (logs) logs.Add(level + ": " + message); },
            };
            Mirage.Runtime.Init(options);
            Mirage.Runtime.Init(options); // the same options again: only replaces the log callback
            Fails(Status.RuntimeAlreadyInitialised, "Init with other options after the first",
                () => Mirage.Runtime.Init(new RuntimeOptions { Provider = Provider.Cpu, IntraThreads = 1 }));
        });

        Test("Context: bad model directories", () =>
        {
            Throws<ArgumentNullException>("new Context(null)", () => new Context(null));
            Fails(Status.ModelNotFound, "a directory that does not exist",
                () => new Context(Path.Combine(models, "no-such-set")), "no-such-set");
            Fails(Status.ModelNotFound, "a directory without manifest.json", () => new Context(models));
            Throws<ArgumentException>("a NUL in the path", () => new Context(fashionDir + "\0/x"));
            Throws<ArgumentException>("a lone surrogate in the path", () => new Context(fashionDir + "\ud800"));
            Fails(Status.ModelNotFound, "a non-ASCII path (UTF-8 on the way in)",
                () => new Context(Path.Combine(models, "caf\u00e9-\u2603")), "caf\u00e9-\u2603");
        });

        using (var fashion = new Context(fashionDir))
        using (var text = new Context(textDir))
        {
            RunFashion(fashion, fashionDir);
            RunJobs(fashion, fashionDir);
            RunText(text, fashion);
            RunTextJobs(text);
        }
        if (File.Exists(Path.Combine(packs, "fashion.mirage"))) RunPack(fashionDir, Path.Combine(packs, "fashion.mirage"));
        else Console.WriteLine("skip packs: no fashion.mirage in MIRAGE_TEST_PACKS (run-tests.sh makes it with LIBDIR/mirage pack)");
        lock (logs) Check(logs.Count > 0, "the log callback received nothing at Info level");
        if (Verbose) lock (logs) foreach (var l in logs.Take(5)) Console.WriteLine("  log " + l);

        Test("Dispose", () => RunDispose(fashionDir, textDir));

        Test("Image helpers", RunImageHelpers);

        Test("runtime: Init again with the same options and no log callback", () =>
        {
            Mirage.Runtime.Init(new RuntimeOptions { Provider = Provider.Cpu, IntraThreads = 2, LogLevel = LogLevel.Warn });
            int before;
            lock (logs) before = logs.Count;
            using (var c = new Context(fashionDir)) c.Generate(new GenerateOptions { Steps = 1 });
            lock (logs) Equal(before, logs.Count, "the old log callback is no longer called");
        });

        // A Stable-Diffusion-shaped folder in optimum's ONNX layout (the repository's tiny fixture).
        string sdDir = Path.Combine(models, "..", "tests", "fixtures", "sd", "sd15");
        if (Directory.Exists(sdDir))
            Test("a diffusers folder (tests/fixtures/sd/sd15): samplers, a job, a bad sampler", () =>
            {
                using (var sd = new Context(sdDir))
                {
                    Equal(64, sd.Info.Width, "SD folder width");
                    Equal(3, sd.Info.Channels, "SD folder channels");
                    foreach (var sampler in new[] { null, "pndm", "euler-a", "dpm++2m-karras", "lcm" })
                    {
                        var images = sd.Generate(new GenerateOptions { Prompt = "a red cube", Negative = "blue", Steps = 3, Count = 2, Sampler = sampler });
                        Equal(2, images.Length, "images with sampler " + (sampler ?? "null"));
                    }
                    var o = new GenerateOptions { Prompt = "a red cube", Steps = 3, Seed = 4, Sampler = "euler" };
                    using (var job = sd.SubmitGenerate(o))
                    {
                        job.Wait();
                        using (var b = job.TakeImages()) Check(Same(b.ToImages(), sd.Generate(o)), "a job = the blocking call on a diffusers folder");
                    }
                    Fails(Status.InvalidArgument, "an unknown sampler", () => sd.Generate(new GenerateOptions { Steps = 3, Sampler = "heun" }), "heun");
                }
            });
        else Console.WriteLine("skip diffusers folder: " + sdDir + " not found");

        if (Directory.Exists(emojiDir))
            Test("emoji: Tileable (blocking, job, prepared, from memory)", () => RunTileable(emojiDir, packs));
        if (Directory.Exists(emojiDir))
            Test("emoji (RGBA, text-conditioned)", () =>
            {
                using (var emoji = new Context(emojiDir))
                {
                    var info = emoji.Info;
                    Equal(4, info.Channels, "emoji channels");
                    var images = emoji.Generate(new GenerateOptions { Prompt = "a red apple", Steps = 2, Seed = 1 });
                    Equal(1, images.Length, "one image");
                    Equal(4, images[0].Channels, "RGBA by default (the set's own)");
                    Check(images[0].ToRgba32().SequenceEqual(images[0].Pixels), "ToRgba32 of RGBA is the pixels");
                    var rgb = emoji.Generate(new GenerateOptions { Prompt = "a red apple", Steps = 2, Seed = 1, Format = PixelFormat.Rgb8 });
                    Equal(3, rgb[0].Channels, "Rgb8 on request");

                    // Colour and alpha through a target: BGRA swizzled, bottom-up with padding, premultiplied.
                    using (var job = emoji.SubmitGenerate(new GenerateOptions { Prompt = "a red apple", Steps = 2, Seed = 1 }))
                    {
                        job.Wait();
                        int stride = 32 * 4 + 4;
                        var bgra = Filled(32 * stride, 0x11);
                        job.TakeInto(new Target(bgra, 32, 32, PixelFormat.Bgra8) { Stride = stride, BottomUp = true });
                        CheckBgraBottomUp(bgra, stride, images[0], 0x11, "emoji BGRA");
                    }
                    using (var job = emoji.SubmitGenerate(new GenerateOptions { Prompt = "a red apple", Steps = 2, Seed = 1 }))
                    {
                        job.Wait();
                        var pm = new byte[32 * 32 * 4];
                        job.TakeInto(new Target(pm, 32, 32, PixelFormat.Rgba8) { Premultiplied = true });
                        int worst = 0;
                        bool alpha = true;
                        for (int i = 0; i < pm.Length; i += 4)
                        {
                            int a = images[0].Pixels[i + 3];
                            alpha &= pm[i + 3] == a;
                            for (int c = 0; c < 3; c++)
                                worst = Math.Max(worst, (int)Math.Abs(pm[i + c] - Math.Round(images[0].Pixels[i + c] * a / 255.0)));
                        }
                        Check(alpha, "premultiplied keeps alpha");
                        Check(worst <= 1, "premultiplied colour = colour x alpha (worst " + worst + ")");
                        Check(images[0].Pixels.Where((v, i) => i % 4 == 3).Any(v => v < 255), "the emoji has transparent pixels");
                    }
                }
            });
    }

    private static void RunFashion(Context fashion, string fashionDir)
    {
        Image[] first = null;

        Test("fashion: Info", () =>
        {
            var info = fashion.Info;
            Equal("fashion", info.Name, "Name");
            Equal(28, info.Width, "Width");
            Equal(28, info.Height, "Height");
            Equal(1, info.Channels, "Channels");
            Check(info.LatentShape != null && info.LatentShape.SequenceEqual(new[] { 3, 8, 8 }), "LatentShape 3x8x8");
            Check(!info.PriorSampleable, "models/fashion does not declare a sampleable prior");
            Check(info.Providers.ContainsKey(ModelKind.VaeEncoder) && info.Providers.ContainsKey(ModelKind.VaeDecoder)
                && info.Providers.ContainsKey(ModelKind.Unet), "providers of the VAE and U-Net");
            Check(!info.Providers.ContainsKey(ModelKind.TextEncoder), "no text encoder");
            Check(info.Providers.Values.All(p => p == Provider.Cpu), "every model on the CPU");
            Check(info.Text == null && !info.IsTextConditioned, "not text-conditioned");
            Fails(Status.Unsupported, "TextShape() of an unconditional set", () => fashion.TextShape());
        });

        Test("fashion: Generate, determinism, formats, samplers", () =>
        {
            first = fashion.Generate(new GenerateOptions { Seed = 7, Steps = 4, Count = 2 });
            Equal(2, first.Length, "Count images");
            foreach (var im in first)
            {
                Equal(28, im.Width, "width");
                Equal(28, im.Height, "height");
                Equal(1, im.Channels, "the set's own channels by default");
                Equal(28 * 28, im.Pixels.Length, "pixels");
            }
            Check(first[0].Pixels.Distinct().Count() > 10, "the image is not flat");
            Check(!Same(first[0], first[1]), "two images of one batch differ");
            var again = fashion.Generate(new GenerateOptions { Seed = 7, Steps = 4, Count = 2 });
            Check(Same(first, again), "the same seed gives the same pixels");
            var other = fashion.Generate(new GenerateOptions { Seed = 8, Steps = 4, Count = 2 });
            Check(!Same(first[0], other[0]), "another seed gives other pixels");
            var defaults = fashion.Generate(); // 50 steps, one image
            Equal(1, defaults.Length, "Generate() with the defaults");

            var rgba = fashion.Generate(new GenerateOptions { Seed = 7, Steps = 4, Count = 2, Format = PixelFormat.Rgba8 });
            Equal(4, rgba[0].Channels, "Rgba8 on request");
            Check(rgba[0].Pixels.SequenceEqual(first[0].ToRgba32()), "Rgba8 is the grey image replicated, alpha 255");
            var rgb = fashion.Generate(new GenerateOptions { Seed = 7, Steps = 4, Format = PixelFormat.Rgb8 });
            Equal(3, rgb[0].Channels, "Rgb8 on request");

            var dpm = fashion.Generate(new GenerateOptions { Seed = 7, Steps = 4, Sampler = "dpm++2m" });
            var dpmUpper = fashion.Generate(new GenerateOptions { Seed = 7, Steps = 4, Sampler = "DPM++2M" });
            Check(Same(dpm, dpmUpper), "the sampler name is case-insensitive");
            Check(!Same(dpm[0], first[0]), "dpm++2m differs from ddim");
            var eta = fashion.Generate(new GenerateOptions { Seed = 7, Steps = 4, Eta = 1 });
            var eta2 = fashion.Generate(new GenerateOptions { Seed = 7, Steps = 4, Eta = 1 });
            Check(Same(eta, eta2), "stochastic DDIM (eta 1) is reproducible from the seed");
        });

        Test("fashion: Progress and Preview", () =>
        {
            var steps = new List<string>();
            int previews = 0;
            Image previewFirst = null;
            var images = fashion.Generate(new GenerateOptions
            {
                Seed = 7,
                Steps = 4,
                Count = 2,
                Progress = (step, total) => { steps.Add(step + "/" + total); return true; },
                Preview = (step, estimate) =>
                {
                    previews++;
                    Check(estimate.Length == 2 && estimate[0].Width == 28 && estimate[0].Channels == 1, "preview images");
                    if (step == 4) previewFirst = estimate[0];
                    return true;
                },
            });
            Equal("1/4 2/4 3/4 4/4", string.Join(" ", steps), "progress steps");
            Equal(4, previews, "preview calls");
            Check(Same(images, first), "callbacks change nothing");
            Check(previewFirst != null && Same(previewFirst, images[0]), "the last preview is the result");

            // Collections during the callbacks move nothing the library holds (pinned buffers, the state's
            // GCHandle, the callbacks' delegates).
            var collected = fashion.Generate(new GenerateOptions
            {
                Seed = 7,
                Steps = 4,
                Count = 2,
                Prompt = "",
                Sampler = "ddim",
                Progress = (step, total) => { GC.Collect(); GC.WaitForPendingFinalizers(); return true; },
                Preview = (step, estimate) => { GC.Collect(); return true; },
            });
            Check(Same(collected, first), "GC.Collect inside the callbacks changes nothing");
        });

        Test("fashion: cancel from Progress, Preview and Cancel() on another thread", () =>
        {
            int calls = 0;
            Fails(Status.Cancelled, "Progress returning false at step 2",
                () => fashion.Generate(new GenerateOptions { Steps = 4, Progress = (s, t) => ++calls < 2 }));
            Equal(2, calls, "progress calls until the cancel");
            Fails(Status.Cancelled, "Preview returning false",
                () => fashion.Generate(new GenerateOptions { Steps = 4, Preview = (s, i) => false }));

            var started = new ManualResetEventSlim();
            int progress = 0;
            Exception caught = null;
            var worker = new Thread(() =>
            {
                try
                {
                    fashion.Generate(new GenerateOptions
                    {
                        Steps = 1000,
                        Progress = (s, t) => { Interlocked.Increment(ref progress); started.Set(); return true; },
                    });
                }
                catch (Exception e)
                {
                    caught = e;
                }
            });
            worker.Start();
            Check(started.Wait(30000), "the generation on the other thread started");
            fashion.Cancel();
            worker.Join();
            var m = caught as MirageException;
            Check(m != null && m.Status == Status.Cancelled, "Cancel() from another thread: " + caught);
            Check(m != null && m.Detail.Length > 0, "the cancelled thread read its own message");
            Check(progress < 1000, "the generation stopped early (" + progress + " steps)");
            fashion.Cancel(); // idle: nothing to cancel
            Check(Same(fashion.Generate(new GenerateOptions { Seed = 7, Steps = 4, Count = 2 }), first),
                "a generation after a cancel runs normally");

            // Cancel() from inside a callback.
            Fails(Status.Cancelled, "Cancel() inside Progress",
                () => fashion.Generate(new GenerateOptions { Steps = 4, Progress = (s, t) => { fashion.Cancel(); return true; } }));
        });

        Test("fashion: a callback that throws", () =>
        {
            var boom = new InvalidOperationException("boom from Progress");
            int calls = 0;
            var e = Throws<InvalidOperationException>("Progress throws",
                () => fashion.Generate(new GenerateOptions { Steps = 4, Progress = (s, t) => { calls++; if (s == 2) throw boom; return true; } }));
            Check(ReferenceEquals(e, boom), "the very exception is rethrown");
            Equal(2, calls, "no callback after the throw");
            Check(e != null && e.StackTrace != null && e.StackTrace.Contains("MirageTests"), "the thrower's stack trace is kept");

            var last = new InvalidOperationException("boom at the last step");
            var e3 = Throws<InvalidOperationException>("Progress throws at the last step",
                () => fashion.Generate(new GenerateOptions { Steps = 4, Progress = (s, t) => { if (s == t) throw last; return true; } }));
            Check(ReferenceEquals(e3, last), "the very exception is rethrown (last step)");

            var boom2 = new FormatException("boom from Preview");
            var e2 = Throws<FormatException>("Preview throws",
                () => fashion.Generate(new GenerateOptions { Steps = 4, Preview = (s, i) => { throw boom2; } }));
            Check(ReferenceEquals(e2, boom2), "the very exception is rethrown (Preview)");

            Throws<NullReferenceException>("a null dereference in Progress",
                () => fashion.Generate(new GenerateOptions { Steps = 4, Progress = (s, t) => Nothing.Length > 0 }));
            Throws<ArgumentException>("a throwing callback on img2img",
                () => fashion.Img2Img(first, new GenerateOptions { Steps = 4, Strength = 0.5f, Progress = (s, t) => { throw new ArgumentException("x"); } }));
            Check(Same(fashion.Generate(new GenerateOptions { Seed = 7, Steps = 4, Count = 2 }), first),
                "the context works after callbacks threw");
        });

        Test("fashion: Img2Img, Denoise, Inpaint", () =>
        {
            var o = new GenerateOptions { Seed = 3, Steps = 8, Strength = 0.5f };
            var a = fashion.Img2Img(first, o);
            Equal(2, a.Length, "one result per input");
            Equal(1, a[0].Channels, "the set's format");
            Check(Same(a, fashion.Img2Img(first, o)), "img2img is deterministic");
            Check(!Same(a[0], first[0]), "img2img changes the image");
            var far = fashion.Img2Img(first, new GenerateOptions { Seed = 3, Steps = 8, Strength = 1 });
            Check(MeanAbsDiff(a[0].Pixels, first[0].Pixels) < MeanAbsDiff(far[0].Pixels, first[0].Pixels),
                "strength 0.5 stays closer to the input than strength 1");

            var d = fashion.Denoise(new[] { first[0] }, new GenerateOptions { Steps = 20, Strength = 0.1f });
            Equal(1, d.Length, "denoise: one result");
            double dd = MeanAbsDiff(d[0].Pixels, first[0].Pixels);
            Check(dd < 20, "denoise stays close to a clean input (mean |diff| " + dd.ToString("F2") + ")");
            Check(Same(d, fashion.Denoise(new[] { first[0] }, new GenerateOptions { Steps = 20, Strength = 0.1f })), "denoise is deterministic");

            var mask = new Image(28, 28, 1);
            for (int y = 0; y < 28; y++)
                for (int x = 0; x < 14; x++) mask.Pixels[y * 28 + x] = 255;
            var p = fashion.Inpaint(new[] { first[0] }, new[] { mask }, new GenerateOptions { Seed = 5, Steps = 8 });
            Equal(1, p.Length, "inpaint: one result");
            bool kept = true, changed = false;
            for (int y = 0; y < 28; y++)
                for (int x = 0; x < 28; x++)
                {
                    int i = y * 28 + x;
                    if (x >= 14) kept &= p[0].Pixels[i] == first[0].Pixels[i];
                    else changed |= p[0].Pixels[i] != first[0].Pixels[i];
                }
            Check(kept, "inpaint keeps the unmasked pixels exactly");
            Check(changed, "inpaint changes the masked pixels");
            var rgba = fashion.Img2Img(first, new GenerateOptions { Seed = 3, Steps = 8, Strength = 0.5f, Format = PixelFormat.Rgba8 });
            Check(rgba[0].Pixels.SequenceEqual(a[0].ToRgba32()), "img2img in Rgba8 = the grey result replicated");
        });

        Test("fashion: Encode, Sample, SamplePrior, Decode, DecodeInto", () =>
        {
            var dist = fashion.Encode(first);
            Check(dist.Mean.Shape.SequenceEqual(new[] { 2, 3, 8, 8 }), "mean shape 2x3x8x8");
            Check(dist.Logvar.Shape.SequenceEqual(new[] { 2, 3, 8, 8 }), "logvar shape 2x3x8x8");
            Equal(2 * 3 * 8 * 8, dist.Mean.Data.Length, "mean floats");
            var again = fashion.Encode(first[0], first[1]);
            Check(again.Mean.Data.SequenceEqual(dist.Mean.Data), "encode is deterministic (params array)");

            var z = fashion.Sample(dist.Mean, dist.Logvar, 42);
            Check(z.Shape.SequenceEqual(dist.Mean.Shape), "sample shape");
            Check(z.Data.SequenceEqual(fashion.Sample(dist.Mean, dist.Logvar, 42).Data), "sample is deterministic");
            Check(!z.Data.SequenceEqual(dist.Mean.Data), "sample adds noise");
            Check(!z.Data.SequenceEqual(fashion.Sample(dist.Mean, dist.Logvar, 43).Data), "another seed, another sample");

            var recon = fashion.Decode(dist.Mean);
            Equal(2, recon.Length, "decode: one image per latent");
            Equal(1, recon[0].Channels, "decode: the set's format by default");
            double err = MeanAbsDiff(recon[0].Pixels, first[0].Pixels);
            Check(err < 25, "decode(encode(x)) is close to x (mean |diff| " + err.ToString("F2") + ")");

            var prior = fashion.SamplePrior(3, 5);
            Check(prior.Shape.SequenceEqual(new[] { 3, 3, 8, 8 }), "prior shape 3x3x8x8");
            Check(prior.Data.SequenceEqual(fashion.SamplePrior(3, 5).Data), "prior is deterministic");
            var decoded = fashion.Decode(prior);
            Equal(3, decoded.Length, "3 decoded images");
            var decodedRgba = fashion.Decode(prior, PixelFormat.Rgba8);
            Equal(4, decodedRgba[0].Channels, "decode in Rgba8");
            Check(decodedRgba[2].Pixels.SequenceEqual(decoded[2].ToRgba32()), "Rgba8 decode = grey replicated");

            var targets = new[] { new Image(28, 28, 1), new Image(28, 28, 1), new Image(28, 28, 4) };
            fashion.DecodeInto(prior, targets);
            Check(Same(targets[0], decoded[0]) && Same(targets[1], decoded[1]), "DecodeInto = Decode");
            Check(Same(targets[2], decodedRgba[2]), "DecodeInto an RGBA target");

            var one = prior.Item(1);
            Check(one.Shape.SequenceEqual(new[] { 1, 3, 8, 8 }), "Latents.Item shape");
            Check(Same(fashion.Decode(one)[0], decoded[1]), "Latents.Item(1) decodes to image 1");
            var mine = new Latents(new float[3 * 8 * 8], 1, 3, 8, 8);
            Equal(1, fashion.Decode(mine).Length, "decode of host-made latents");

            // Bad input.
            Throws<ArgumentException>("Latents with the wrong length", () => new Latents(new float[10], 1, 3, 8, 8));
            Throws<ArgumentNullException>("Latents(null)", () => new Latents(null, 1, 3, 8, 8));
            Throws<ArgumentOutOfRangeException>("Latents with a zero dimension", () => new Latents(new float[0], 0, 3, 8, 8));
            Fails(Status.InvalidArgument, "decode of the wrong shape", () => fashion.Decode(new Latents(new float[4 * 8 * 8], 1, 4, 8, 8)));
            var nan = new float[3 * 8 * 8];
            nan[5] = float.NaN;
            Fails(Status.InvalidArgument, "decode of NaN", () => fashion.Decode(new Latents(nan, 1, 3, 8, 8)), "NaN");
            Fails(Status.InvalidArgument, "sample with mismatched shapes", () => fashion.Sample(dist.Mean, one, 1));
            Fails(Status.InvalidArgument, "SamplePrior(0)", () => fashion.SamplePrior(0, 1));
            Throws<ArgumentOutOfRangeException>("SamplePrior(-1)", () => fashion.SamplePrior(-1, 1));
            Fails(Status.InvalidArgument, "DecodeInto with the wrong count", () => fashion.DecodeInto(prior, new[] { new Image(28, 28, 1) }));
            Fails(Status.InvalidArgument, "DecodeInto a target of the wrong size",
                () => fashion.DecodeInto(one, new[] { new Image(27, 28, 1) }));
            Throws<ArgumentNullException>("Decode(null)", () => fashion.Decode(null));
            Throws<ArgumentNullException>("Sample(null, ...)", () => fashion.Sample(null, dist.Logvar, 1));
            Throws<ArgumentNullException>("DecodeInto(..., null)", () => fashion.DecodeInto(one, null));
        });

        Test("fashion: bad input", () =>
        {
            var wrongSize = new Image(27, 28, 1);
            var wrongChannels = new Image(28, 28, 3);
            var mask = new Image(28, 28, 1);
            var o = new GenerateOptions { Steps = 4, Strength = 0.5f };
            Throws<ArgumentNullException>("Img2Img(null images)", () => fashion.Img2Img(null, o));
            Throws<ArgumentNullException>("Img2Img(null options)", () => fashion.Img2Img(first, null));
            Throws<ArgumentNullException>("Img2Img with a null image", () => fashion.Img2Img(new Image[] { null }, o));
            Throws<ArgumentNullException>("Encode(null)", () => fashion.Encode(null));
            Throws<ArgumentNullException>("Denoise(null images)", () => fashion.Denoise(null, o));
            Throws<ArgumentNullException>("Inpaint(null masks)", () => fashion.Inpaint(first, null, o));
            Fails(Status.InvalidArgument, "Img2Img of an image of the wrong size", () => fashion.Img2Img(new[] { wrongSize }, o), "27");
            Fails(Status.InvalidArgument, "Img2Img of an RGB image on a grey set", () => fashion.Img2Img(new[] { wrongChannels }, o));
            Fails(Status.InvalidArgument, "Denoise of an image of the wrong size", () => fashion.Denoise(new[] { wrongSize }, o));
            Fails(Status.InvalidArgument, "Encode of an image of the wrong size", () => fashion.Encode(wrongSize));
            Fails(Status.InvalidArgument, "Img2Img of no images", () => fashion.Img2Img(new Image[0], o));
            Fails(Status.InvalidArgument, "Inpaint with a mask of another size",
                () => fashion.Inpaint(new[] { first[0] }, new[] { new Image(28, 27, 1) }, o));
            Fails(Status.InvalidArgument, "Inpaint with an RGBA mask",
                () => fashion.Inpaint(new[] { first[0] }, new[] { new Image(28, 28, 4) }, o));
            Throws<ArgumentException>("Inpaint with fewer masks than images", () => fashion.Inpaint(first, new[] { mask }, o));
            Fails(Status.InvalidArgument, "strength 0", () => fashion.Img2Img(first, new GenerateOptions { Steps = 4, Strength = 0 }), "strength");
            Fails(Status.InvalidArgument, "strength NaN", () => fashion.Img2Img(first, new GenerateOptions { Steps = 4, Strength = float.NaN }), "strength");

            Fails(Status.InvalidArgument, "steps 0", () => fashion.Generate(new GenerateOptions { Steps = 0 }), "steps");
            Fails(Status.InvalidArgument, "steps 1001", () => fashion.Generate(new GenerateOptions { Steps = 1001 }), "steps");
            Throws<ArgumentOutOfRangeException>("steps -1", () => fashion.Generate(new GenerateOptions { Steps = -1 }));
            Fails(Status.InvalidArgument, "count 0", () => fashion.Generate(new GenerateOptions { Steps = 4, Count = 0 }), "count");
            Fails(Status.InvalidArgument, "count 1025", () => fashion.Generate(new GenerateOptions { Steps = 4, Count = 1025 }), "count");
            Fails(Status.InvalidArgument, "an unknown sampler", () => fashion.Generate(new GenerateOptions { Steps = 4, Sampler = "euler-x" }), "sampler");
            Fails(Status.InvalidArgument, "eta 2", () => fashion.Generate(new GenerateOptions { Steps = 4, Eta = 2 }), "eta");
            Fails(Status.InvalidArgument, "an unknown format", () => fashion.Generate(new GenerateOptions { Steps = 4, Format = (PixelFormat)9 }), "format");
            Throws<ArgumentException>("a NUL in the sampler", () => fashion.Generate(new GenerateOptions { Steps = 4, Sampler = "ddim\0" }));
            Throws<ArgumentException>("a NUL in the prompt", () => fashion.Generate(new GenerateOptions { Steps = 4, Prompt = "a\0b" }));
            Throws<ArgumentException>("a NUL in the negative prompt", () => fashion.Generate(new GenerateOptions { Steps = 4, Negative = "\0" }));
            Throws<ArgumentException>("a lone surrogate in the prompt", () => fashion.Generate(new GenerateOptions { Steps = 4, Prompt = "\udc00" }));
            Fails(Status.Unsupported, "a prompt on an unconditional set", () => fashion.Generate(new GenerateOptions { Steps = 4, Prompt = "a shoe" }));
            Fails(Status.Unsupported, "Embed on an unconditional set", () => fashion.Embed("a shoe"));
            Fails(Status.Unsupported, "Interpolate on an unconditional set",
                () => fashion.Interpolate(new[] { "a", "b" }, 2, new GenerateOptions { Steps = 4 }));
            Check(fashion.Generate(new GenerateOptions { Steps = 4, Prompt = "" }).Length == 1, "an empty prompt is unconditional");

            // Image arguments the binding refuses itself.
            Throws<ArgumentException>("an Image whose pixels do not fit", () => new Image(28, 28, 1, new byte[10]));
            Throws<ArgumentOutOfRangeException>("an Image of 2 channels", () => new Image(28, 28, 2));
            Throws<ArgumentOutOfRangeException>("an Image of width 0", () => new Image(0, 28, 1));

            // The message belongs to the thread that failed.
            string other = null;
            var t = new Thread(() =>
            {
                try { fashion.Generate(new GenerateOptions { Steps = 4, Sampler = "other-thread" }); }
                catch (MirageException e) { other = e.Detail; }
            });
            t.Start();
            t.Join();
            Fails(Status.InvalidArgument, "a failure on this thread keeps its own message",
                () => fashion.Generate(new GenerateOptions { Steps = 0 }), "steps");
            Check(other != null && other.Contains("other-thread"), "the other thread got its own message: " + other);
        });

        Test("fashion: concurrent generations on one context", () =>
        {
            var results = new Image[4][];
            var threads = Enumerable.Range(0, 4).Select(i => new Thread(() =>
                results[i] = fashion.Generate(new GenerateOptions { Seed = 7, Steps = 4, Count = 2 }))).ToList();
            threads.ForEach(t => t.Start());
            threads.ForEach(t => t.Join());
            Check(results.All(r => r != null && Same(r, first)), "every thread got the serial result");
        });
    }

    private static void RunText(Context text, Context fashion)
    {
        Test("fashion-text: Info, Generate with prompts", () =>
        {
            var info = text.Info;
            Equal("fashion-text", info.Name, "Name");
            Check(info.IsTextConditioned && info.Text.Tokens == 16 && info.Text.Width == 384, "text shape 16x384");
            Check(info.Providers.ContainsKey(ModelKind.TextEncoder), "a text encoder");
            Equal(16, text.TextShape().Tokens, "TextShape()");

            var o = new GenerateOptions { Prompt = "a photo of a sandal", Seed = 1, Steps = 4, Count = 2 };
            var sandals = text.Generate(o);
            Equal(2, sandals.Length, "two sandals");
            Check(Same(sandals, text.Generate(o)), "same prompt and seed, same pixels");
            var bags = text.Generate(new GenerateOptions { Prompt = "a photo of a bag", Seed = 1, Steps = 4, Count = 2 });
            Check(!Same(sandals[0], bags[0]), "another prompt, other pixels");
            var negative = text.Generate(new GenerateOptions { Prompt = "a photo of a sandal", Negative = "a sneaker", Seed = 1, Steps = 4, Count = 2 });
            Check(!Same(sandals[0], negative[0]), "a negative prompt changes the result");
            var guided = text.Generate(new GenerateOptions { Prompt = "a photo of a sandal", Guidance = 7, Seed = 1, Steps = 4, Count = 2 });
            Check(!Same(sandals[0], guided[0]), "guidance 7 differs from the set's 3");
            var three = text.Generate(new GenerateOptions { Prompt = "a photo of a sandal", Guidance = 3, Seed = 1, Steps = 4, Count = 2 });
            Check(Same(sandals, three), "the default guidance is the set's (3)");
            var unicode = text.Generate(new GenerateOptions { Prompt = "une sandale d'\u00e9t\u00e9 \u2600 \ud83d\udc61", Seed = 1, Steps = 4 });
            Equal(1, unicode.Length, "a non-ASCII prompt");
            var unconditional = text.Generate(new GenerateOptions { Seed = 1, Steps = 4 });
            Equal(1, unconditional.Length, "no prompt: unconditional");

            Fails(Status.InvalidArgument, "guidance NaN with a prompt",
                () => text.Generate(new GenerateOptions { Prompt = "a bag", Guidance = float.NaN, Steps = 4 }), "guidance");
            Fails(Status.InvalidArgument, "guidance 51", () => text.Generate(new GenerateOptions { Prompt = "a bag", Guidance = 51, Steps = 4 }), "guidance");
            Fails(Status.InvalidArgument, "guidance -2", () => text.Generate(new GenerateOptions { Prompt = "a bag", Guidance = -2, Steps = 4 }), "guidance");
            Throws<ArgumentException>("a NUL in the prompt", () => text.Generate(new GenerateOptions { Prompt = "a photo\0 of a bag", Steps = 4 }));
            Throws<ArgumentException>("a NUL in the negative prompt", () => text.Generate(new GenerateOptions { Prompt = "a bag", Negative = "x\0", Steps = 4 }));
        });

        Test("fashion-text: Img2Img and Inpaint with a prompt, cancel", () =>
        {
            var start = fashion.Generate(new GenerateOptions { Seed = 7, Steps = 4 });
            var o = new GenerateOptions { Prompt = "a photo of a bag", Seed = 2, Steps = 8, Strength = 0.6f };
            var a = text.Img2Img(start, o);
            Check(Same(a, text.Img2Img(start, o)), "text img2img is deterministic");
            var mask = new Image(28, 28, 1);
            for (int i = 0; i < 28 * 14; i++) mask.Pixels[i] = 255;
            var p = text.Inpaint(start, new[] { mask }, new GenerateOptions { Prompt = "a photo of a bag", Seed = 2, Steps = 8 });
            Check(p[0].Pixels.Skip(28 * 14).SequenceEqual(start[0].Pixels.Skip(28 * 14)), "text inpaint keeps the unmasked half");
            int calls = 0;
            Fails(Status.Cancelled, "cancel a text generation from Progress",
                () => text.Generate(new GenerateOptions { Prompt = "a bag", Steps = 4, Progress = (s, t) => ++calls < 3 }));
            Equal(3, calls, "progress calls until the cancel");
        });

        Test("fashion-text: Interpolate", () =>
        {
            var prompts = new[] { "a photo of a sandal", "a photo of a bag" };
            int lastTotal = 0;
            var o = new GenerateOptions { Seed = 4, Steps = 4, Progress = (s, t) => { lastTotal = t; return true; } };
            var frames = text.Interpolate(prompts, 3, o);
            Equal(3, frames.Length, "3 frames");
            Equal(12, lastTotal, "progress counts the steps of every frame");
            Check(Same(frames, text.Interpolate(prompts, 3, o)), "interpolate is deterministic");
            Check(!Same(frames[0], frames[2]), "the ends differ");
            var ends = text.Generate(new GenerateOptions { Prompt = prompts[0], Seed = 4, Steps = 4 });
            Check(MeanAbsDiff(ends[0].Pixels, frames[0].Pixels) < 10, "the first frame is the first prompt's image");
            var batched = text.Interpolate(prompts, 3, new GenerateOptions { Seed = 4, Steps = 4, Count = 3 });
            Equal(3, batched.Length, "3 frames in one U-Net batch");
            var three = text.Interpolate(new[] { "a sandal", "a bag", "a dress" }, 5, new GenerateOptions { Seed = 4, Steps = 4 });
            Equal(5, three.Length, "5 frames through 3 prompts");

            Fails(Status.InvalidArgument, "one prompt", () => text.Interpolate(new[] { "a bag" }, 3, o));
            Fails(Status.InvalidArgument, "1 frame", () => text.Interpolate(prompts, 1, o), "frames");
            Throws<ArgumentOutOfRangeException>("-1 frames", () => text.Interpolate(prompts, -1, o));
            Throws<ArgumentNullException>("null prompts", () => text.Interpolate(null, 3, o));
            Throws<ArgumentNullException>("a null prompt", () => text.Interpolate(new[] { "a bag", null }, 3, o));
            Throws<ArgumentException>("a NUL in a prompt", () => text.Interpolate(new[] { "a bag", "a\0dress" }, 3, o));
            Throws<ArgumentNullException>("null options", () => text.Interpolate(prompts, 3, null));
            var boom = new TimeoutException("boom");
            var e = Throws<TimeoutException>("Progress throws during interpolate",
                () => text.Interpolate(prompts, 3, new GenerateOptions { Steps = 4, Progress = (s, t) => { throw boom; } }));
            Check(ReferenceEquals(e, boom), "the very exception is rethrown (interpolate)");
        });

        Test("fashion-text: Embed", () =>
        {
            var e = text.Embed("a photo of a sandal");
            Equal(384, e.Pooled.Length, "pooled width");
            Check(e.Tokens == null, "no token embeddings unless asked for");
            double norm = Math.Sqrt(e.Pooled.Sum(v => (double)v * v));
            Check(Math.Abs(norm - 1) < 1e-3, "pooled is L2-normalised (" + norm + ")");
            var t = text.Embed("a photo of a sandal", withTokens: true);
            Equal(16 * 384, t.Tokens.Length, "token embeddings 16x384");
            Check(t.Pooled.SequenceEqual(e.Pooled), "embed is deterministic");
            Check(!text.Embed("a photo of a bag").Pooled.SequenceEqual(e.Pooled), "another prompt, another embedding");
            Equal(384, text.Embed("").Pooled.Length, "the empty prompt embeds");
            Equal(384, text.Embed("caf\u00e9 \u2603 \ud83d\udc61").Pooled.Length, "a non-ASCII prompt embeds");
            Throws<ArgumentNullException>("Embed(null)", () => text.Embed(null));
            Throws<ArgumentException>("Embed with a NUL", () => text.Embed("a\0b"));
            Throws<ArgumentException>("Embed with a lone surrogate", () => text.Embed("a\ud800b"));
        });
    }

    private static void RunTextJobs(Context text)
    {
        Test("fashion-text: jobs and Tasks with prompts", () =>
        {
            var prompts = new[] { "a photo of a sandal", "a photo of a bag" };
            var o = new GenerateOptions { Seed = 4, Steps = 4 };
            var frames = text.Interpolate(prompts, 3, o);
            using (var job = text.SubmitInterpolate(prompts, 3, o, new JobOptions { Mode = JobMode.Manual }))
            {
                Equal(12, job.Poll().Total, "an interpolate job counts the steps of every frame");
                while (!job.Poll().IsEnded) job.Advance(5, TimeSpan.FromMilliseconds(4));
                using (var b = job.TakeImages()) Check(Same(b.ToImages(), frames), "SubmitInterpolate (manual) = Interpolate");
            }
            var task = text.InterpolateAsync(prompts, 3, o);
            Check(Settle(task, 60000) && Same(task.Result.ToImages(), frames), "InterpolateAsync = Interpolate");
            var g = new GenerateOptions { Prompt = "a photo of a sandal", Negative = "a sneaker", Seed = 1, Steps = 4, Count = 2 };
            var expected = text.Generate(g);
            var gt = text.GenerateAsync(g);
            Check(Settle(gt, 60000) && Same(gt.Result.ToImages(), expected), "GenerateAsync with a prompt = Generate");
            Fails(Status.InvalidArgument, "one prompt for a job", () => text.SubmitInterpolate(new[] { "a bag" }, 3, o));
            Throws<ArgumentException>("a NUL in a job's prompt", () => text.SubmitGenerate(new GenerateOptions { Prompt = "a\0b" }));
        });
    }

    private static void RunDispose(string fashionDir, string textDir)
    {
        var ctx = new Context(fashionDir);
        var before = ctx.Generate(new GenerateOptions { Seed = 1, Steps = 4 });
        var latents = ctx.SamplePrior(1, 1);
        Check(!ctx.IsDisposed, "IsDisposed before Dispose");
        ctx.Dispose();
        Check(ctx.IsDisposed, "IsDisposed after Dispose");
        ctx.Dispose(); // twice: nothing
        Equal(28 * 28, before[0].Pixels.Length, "images outlive their context");
        var o = new GenerateOptions { Steps = 4 };
        Throws<ObjectDisposedException>("Info", () => { var i = ctx.Info; });
        Throws<ObjectDisposedException>("Generate", () => ctx.Generate(o));
        Throws<ObjectDisposedException>("Img2Img", () => ctx.Img2Img(before, o));
        Throws<ObjectDisposedException>("Denoise", () => ctx.Denoise(before, o));
        Throws<ObjectDisposedException>("Inpaint", () => ctx.Inpaint(before, before, o));
        Throws<ObjectDisposedException>("Interpolate", () => ctx.Interpolate(new[] { "a", "b" }, 2, o));
        Throws<ObjectDisposedException>("Embed", () => ctx.Embed("a"));
        Throws<ObjectDisposedException>("TextShape", () => ctx.TextShape());
        Throws<ObjectDisposedException>("Encode", () => ctx.Encode(before));
        Throws<ObjectDisposedException>("Sample", () => ctx.Sample(latents, latents, 1));
        Throws<ObjectDisposedException>("SamplePrior", () => ctx.SamplePrior(1, 1));
        Throws<ObjectDisposedException>("Decode", () => ctx.Decode(latents));
        Throws<ObjectDisposedException>("DecodeInto", () => ctx.DecodeInto(latents, before));
        Throws<ObjectDisposedException>("Cancel", () => ctx.Cancel());
        Throws<ObjectDisposedException>("Generate(null)", () => ctx.Generate(null));
        Throws<ObjectDisposedException>("SubmitGenerate", () => ctx.SubmitGenerate(o));
        Throws<ObjectDisposedException>("SubmitImg2Img", () => ctx.SubmitImg2Img(before, o));
        Throws<ObjectDisposedException>("SubmitDenoise", () => ctx.SubmitDenoise(before, o));
        Throws<ObjectDisposedException>("SubmitInpaint", () => ctx.SubmitInpaint(before, before, o));
        Throws<ObjectDisposedException>("SubmitInterpolate", () => ctx.SubmitInterpolate(new[] { "a", "b" }, 2, o));
        Throws<ObjectDisposedException>("SubmitEncode", () => ctx.SubmitEncode(before));
        Throws<ObjectDisposedException>("SubmitDecode", () => ctx.SubmitDecode(latents));
        Throws<ObjectDisposedException>("GenerateAsync", () => ctx.GenerateAsync(o));

        // Jobs outlive their context: a manual job still runs, a workers job is cancelled.
        var owner = new Context(fashionDir);
        var manual = owner.SubmitGenerate(new GenerateOptions { Seed = 1, Steps = 4 }, new JobOptions { Mode = JobMode.Manual });
        var worker1 = owner.SubmitGenerate(new GenerateOptions { Steps = 1000 });
        var pending = owner.GenerateAsync(new GenerateOptions { Steps = 1000 });
        owner.Dispose();
        manual.Advance(10, TimeSpan.Zero);
        using (var b = manual.TakeImages()) Check(Same(b.ToImages(), before), "a manual job runs after its context's Dispose");
        Check(worker1.Wait(TimeSpan.FromSeconds(30)), "a workers job ends when its context is disposed");
        Equal(JobState.Cancelled, worker1.Poll().State, "cancelled by the context's Dispose");
        Check(Settle(pending, 30000) && pending.IsCanceled, "a GenerateAsync is cancelled by the context's Dispose: " + pending.Status);
        manual.Dispose();
        worker1.Dispose();

        // using
        Image[] inUsing;
        using (var c = new Context(fashionDir)) inUsing = c.Generate(new GenerateOptions { Seed = 1, Steps = 4 });
        Check(Same(inUsing, before), "a fresh context gives the same pixels");

        // Dispose while a generation runs on another thread: it is cancelled, the context freed after it returns.
        var busy = new Context(fashionDir);
        var started = new ManualResetEventSlim();
        Exception caught = null;
        int steps = 0;
        var worker = new Thread(() =>
        {
            try
            {
                busy.Generate(new GenerateOptions { Steps = 1000, Progress = (s, t) => { steps = s; started.Set(); return true; } });
            }
            catch (Exception e)
            {
                caught = e;
            }
        });
        worker.Start();
        Check(started.Wait(30000), "the generation started");
        busy.Dispose();
        worker.Join();
        var m = caught as MirageException;
        Check(m != null && m.Status == Status.Cancelled, "Dispose cancels a running generation: " + caught);
        Check(steps < 1000, "it stopped early (" + steps + " steps)");
        Throws<ObjectDisposedException>("Generate after that Dispose", () => busy.Generate(o));

        // Dispose from inside the generation's own callback.
        var self = new Context(textDir);
        Fails(Status.Cancelled, "Dispose inside Progress",
            () => self.Generate(new GenerateOptions { Prompt = "a bag", Steps = 4, Progress = (s, t) => { self.Dispose(); return true; } }));
        Check(self.IsDisposed, "disposed from its callback");
        Throws<ObjectDisposedException>("Embed after Dispose from a callback", () => self.Embed("a bag"));

        // A context never disposed is freed by the finalizer without harm.
        new Context(fashionDir).Generate(new GenerateOptions { Steps = 1 });
        GC.Collect();
        GC.WaitForPendingFinalizers();
        Check(true, "finalized");
    }

    // ---- jobs, targets, Tasks, packs ----

    /// <summary>Waits up to <paramref name="ms"/> for <paramref name="condition"/>, sleeping 1 ms between looks.</summary>
    private static bool WaitFor(Func<bool> condition, int ms = 30000)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            if (clock.ElapsedMilliseconds > ms) return false;
            Thread.Sleep(1);
        }
        return true;
    }

    /// <summary>Waits for a Task to end in any way (completed, cancelled, faulted); false on timeout.</summary>
    private static bool Settle(Task task, int ms = 30000)
    {
        try
        {
            return task.Wait(ms);
        }
        catch (AggregateException)
        {
            return true;
        }
    }

    private static byte[] Filled(int n, byte value)
    {
        var b = new byte[n];
        for (int i = 0; i < n; i++) b[i] = value;
        return b;
    }

    private static double SrgbToLinear(double c)
    {
        return c <= 0.04045 ? c / 12.92 : Math.Pow((c + 0.055) / 1.055, 2.4);
    }

    /// <summary>Checks a BGRA8 buffer written bottom-up with <paramref name="stride"/> against RGBA pixels (top-down,
    /// packed): every pixel swizzled and flipped, every padding byte still <paramref name="pad"/>.</summary>
    private static void CheckBgraBottomUp(byte[] buf, int stride, Image rgba, byte pad, string what)
    {
        int w = rgba.Width, h = rgba.Height;
        bool pixels = true, padding = true;
        for (int y = 0; y < h; y++)
        {
            int row = (h - 1 - y) * stride;
            for (int x = 0; x < w; x++)
            {
                int s = (y * w + x) * 4, d = row + x * 4;
                pixels &= buf[d] == rgba.Pixels[s + 2] && buf[d + 1] == rgba.Pixels[s + 1]
                    && buf[d + 2] == rgba.Pixels[s] && buf[d + 3] == rgba.Pixels[s + 3];
            }
            for (int i = row + w * 4; i < Math.Min(row + stride, buf.Length); i++) padding &= buf[i] == pad;
        }
        Check(pixels, what + ": the pixels are the RGBA result flipped and swizzled");
        Check(padding, what + ": the padding between rows is untouched");
    }

    private static void RunJobs(Context fashion, string fashionDir)
    {
        var o = new GenerateOptions { Seed = 7, Steps = 4, Count = 2 };
        var blocking = fashion.Generate(o);
        var blockingRgba = fashion.Generate(new GenerateOptions { Seed = 7, Steps = 4, Count = 2, Format = PixelFormat.Rgba8 });
        var longJob = new GenerateOptions { Steps = 1000, Count = 2 };

        Test("jobs: a workers job waited for = the blocking Generate", () =>
        {
            using (var job = fashion.SubmitGenerate(o))
            {
                Equal(JobMode.Workers, job.Mode, "Mode");
                Equal(PixelFormat.Gray8, job.Format, "Format: the set's own");
                Check(job.Wait(TimeSpan.FromSeconds(60)), "the job ended within 60 s");
                var p = job.Poll();
                Equal(JobState.Done, p.State, "state");
                Equal(4, p.Step, "steps done");
                Equal(4, p.Total, "steps in all");
                Check(p.IsEnded, "IsEnded");
                Fails(Status.InvalidArgument, "TakeLatents of an image job", () => job.TakeLatents(), "images");
                using (var batch = job.TakeImages())
                {
                    Equal(2, batch.Count, "batch Count");
                    Check(batch.Width == 28 && batch.Height == 28 && batch.Format == PixelFormat.Gray8, "batch size and format");
                    Check(Same(batch.ToImages(), blocking), "the job's images are exactly the blocking call's");
                    Check(Same(batch[1], blocking[1]), "batch[1]");
                    Throws<ArgumentOutOfRangeException>("batch[2]", () => { var x = batch[2]; });
                    batch.Dispose();
                    Check(batch.IsDisposed, "ImageBatch.IsDisposed");
                    Throws<ObjectDisposedException>("ToImages after Dispose", () => batch.ToImages());
                }
                Fails(Status.InvalidArgument, "a second take", () => job.TakeImages(), "taken");
            }
            using (var job = fashion.SubmitGenerate(new GenerateOptions { Seed = 7, Steps = 4, Count = 2, Format = PixelFormat.Rgba8 }))
            {
                job.Wait();
                Equal(PixelFormat.Rgba8, job.Format, "Format on request");
                using (var batch = job.TakeImages()) Check(Same(batch.ToImages(), blockingRgba), "an Rgba8 job = the blocking Rgba8 call");
            }
            // Many jobs at once on a context with 2 workers: each gives the serial result.
            using (var two = new Context(fashionDir, new ContextOptions { Workers = 2 }))
            {
                var jobs = Enumerable.Range(0, 5).Select(i => two.SubmitGenerate(o)).ToList();
                foreach (var j in jobs)
                {
                    Check(j.Wait(TimeSpan.FromSeconds(60)), "a job of 2 workers ended");
                    using (var b = j.TakeImages()) Check(Same(b.ToImages(), blocking), "2 workers: the serial result");
                    j.Dispose();
                }
            }
            Fails(Status.InvalidArgument, "a job with 0 steps", () => fashion.SubmitGenerate(new GenerateOptions { Steps = 0 }), "steps");
            Throws<ArgumentException>("a job with a Progress callback",
                () => fashion.SubmitGenerate(new GenerateOptions { Steps = 4, Progress = (s, t) => true }));
            Throws<ArgumentException>("a job with a Preview callback",
                () => fashion.SubmitGenerate(new GenerateOptions { Steps = 4, Preview = (s, i) => true }));
            Fails(Status.InvalidArgument, "an unknown job mode",
                () => fashion.SubmitGenerate(o, new JobOptions { Mode = (JobMode)7 }), "mode");
        });

        Test("jobs: a manual job advanced on a 4 ms budget = the blocking Generate", () =>
        {
            var o20 = new GenerateOptions { Seed = 3, Steps = 20, Count = 2 };
            var expected = fashion.Generate(o20);
            using (var job = fashion.SubmitGenerate(o20, new JobOptions { Mode = JobMode.Manual }))
            {
                Equal(JobMode.Manual, job.Mode, "Mode");
                Equal(JobState.Queued, job.Poll().State, "nothing runs a manual job by itself");
                Check(!job.Wait(TimeSpan.FromMilliseconds(20)), "Wait times out on a manual job nobody advances");
                int calls = 0, steps = 0;
                bool progress = true;
                while (!job.Poll().IsEnded && calls < 1000)
                {
                    int ran = job.Advance(1000, TimeSpan.FromMilliseconds(4));
                    progress &= ran >= 1 && ran <= 20 - steps;
                    steps += ran;
                    calls++;
                    progress &= job.Poll().Step == steps;
                }
                Check(progress, "every Advance ran 1 or more steps, no more than were left, as Poll().Step says");
                Equal(20, steps, "steps run in all");
                Equal(0, job.Advance(5, TimeSpan.Zero), "advancing an ended job runs nothing");
                Check(job.Wait(TimeSpan.Zero), "Wait(0) of an ended job");
                using (var batch = job.TakeImages()) Check(Same(batch.ToImages(), expected), "the manual job's images are exactly the blocking call's");
                if (Verbose) Console.WriteLine("  20 steps in " + calls + " Advance calls");
            }
            using (var job = fashion.SubmitGenerate(o, new JobOptions { Mode = JobMode.Manual }))
            {
                for (int i = 1; i <= 4; i++)
                {
                    Equal(1, job.Advance(1, Timeout.InfiniteTimeSpan), "Advance(1) runs one step");
                    Equal(i, job.Poll().Step, "one step at a time");
                }
                Equal(JobState.Done, job.Poll().State, "done after 4 single steps");
                Equal(0, job.Advance(0, TimeSpan.Zero), "Advance(0) runs nothing");
                using (var batch = job.TakeImages()) Check(Same(batch.ToImages(), blocking), "single steps = the blocking call");
                Throws<ArgumentOutOfRangeException>("Advance(-1, ...)", () => job.Advance(-1, TimeSpan.Zero));
                Throws<ArgumentOutOfRangeException>("Advance with a negative budget", () => job.Advance(1, TimeSpan.FromMilliseconds(-5)));
            }
            using (var job = fashion.SubmitGenerate(o20, new JobOptions { Mode = JobMode.Manual }))
            {
                Equal(0, job.Advance(0, TimeSpan.Zero), "Advance(0, ...) runs nothing");
                Equal(7, job.Advance(7, Timeout.InfiniteTimeSpan), "no time limit: maxSteps steps");
                Equal(13, job.Advance(100, TimeSpan.Zero), "TimeSpan.Zero: no time limit either, to the end");
                using (var batch = job.TakeImages()) Check(Same(batch.ToImages(), expected), "7 + 13 steps = the blocking call");
            }
            using (var job = fashion.SubmitGenerate(o))
            {
                Fails(Status.InvalidArgument, "Advance of a workers job", () => job.Advance(1, TimeSpan.Zero));
                job.Wait();
            }
            // One thread at a time advances a manual job; Dispose from another thread ends a long Advance.
            var shared = fashion.SubmitGenerate(longJob, new JobOptions { Mode = JobMode.Manual });
            int ranThere = -1;
            Exception there = null;
            var stepper = new Thread(() =>
            {
                try
                {
                    ranThere = shared.Advance(1000, Timeout.InfiniteTimeSpan);
                }
                catch (Exception e)
                {
                    there = e;
                }
            });
            stepper.Start();
            Check(WaitFor(() => shared.Poll().Step > 0), "the other thread advances the job");
            Fails(Status.InvalidArgument, "a second thread advancing the same job", () => shared.Advance(1, TimeSpan.Zero));
            shared.Dispose();
            Check(stepper.Join(30000), "Dispose ends an Advance running on another thread");
            Check(there == null && ranThere > 0 && ranThere < 1000, "that Advance returned early: " + ranThere + " steps, " + there);

            Fails(Status.InvalidArgument, "a take before the job has ended", () =>
            {
                using (var job = fashion.SubmitGenerate(o, new JobOptions { Mode = JobMode.Manual })) job.TakeImages();
            });
        });

        Test("jobs: previews", () =>
        {
            using (var job = fashion.SubmitGenerate(o, new JobOptions { Mode = JobMode.Manual, Previews = true }))
            {
                int step;
                Check(job.Preview(null, out step) == null && step == 0, "no preview before the first step");
                job.Advance(1, TimeSpan.Zero);
                using (var p = job.Preview(null, out step))
                {
                    Check(p != null && p.Count == 2 && p.Format == PixelFormat.Gray8 && p.Width == 28, "a preview of 2 grey images");
                    Equal(1, step, "the preview's step");
                }
                using (var p = job.Preview(PixelFormat.Rgba8)) Equal(PixelFormat.Rgba8, p.Format, "a preview in Rgba8");
                Fails(Status.InvalidArgument, "a preview in Bgra8 (targets only)", () => job.Preview(PixelFormat.Bgra8), "format");
                job.Advance(100, TimeSpan.Zero);
                using (var last = job.Preview())
                using (var result = job.TakeImages())
                    Check(Same(last.ToImages(), result.ToImages()), "the last preview is the result");
            }
            using (var job = fashion.SubmitGenerate(o, new JobOptions { Mode = JobMode.Manual }))
                Fails(Status.InvalidArgument, "Preview of a job without previews", () => job.Preview(), "previews");
        });

        Test("jobs: Cancel, Dispose, the context's Cancel", () =>
        {
            var job = fashion.SubmitGenerate(longJob);
            Check(WaitFor(() => job.Poll().State == JobState.Running), "the long job started");
            job.Cancel();
            Check(job.Wait(TimeSpan.FromSeconds(30)), "a cancelled job ends");
            var p = job.Poll();
            Equal(JobState.Cancelled, p.State, "state after Cancel");
            Check(p.Step < 1000 && p.Total == 1000, "it stopped early: " + p);
            Fails(Status.Cancelled, "the take of a cancelled job", () => job.TakeImages());
            job.Cancel(); // ended: nothing
            job.Dispose();
            job.Dispose();
            Check(job.IsDisposed, "IsDisposed");
            Throws<ObjectDisposedException>("Poll after Dispose", () => job.Poll());
            Throws<ObjectDisposedException>("Wait after Dispose", () => job.Wait(TimeSpan.Zero));
            Throws<ObjectDisposedException>("Cancel after Dispose", () => job.Cancel());
            Throws<ObjectDisposedException>("Advance after Dispose", () => job.Advance(1, TimeSpan.Zero));
            Throws<ObjectDisposedException>("Preview after Dispose", () => job.Preview());
            Throws<ObjectDisposedException>("TakeImages after Dispose", () => job.TakeImages());
            Throws<ObjectDisposedException>("TakeLatents after Dispose", () => job.TakeLatents());
            Throws<ObjectDisposedException>("TakeInto after Dispose", () => job.TakeInto(new Target(new byte[28 * 28], 28, 28, PixelFormat.Gray8)));

            // The context's Cancel reaches its workers' jobs, queued or running, not manual ones.
            var running = fashion.SubmitGenerate(longJob);
            var queued = fashion.SubmitGenerate(longJob);
            var manual = fashion.SubmitGenerate(o, new JobOptions { Mode = JobMode.Manual });
            manual.Advance(1, TimeSpan.Zero);
            Check(WaitFor(() => running.Poll().State == JobState.Running), "the first long job started");
            Equal(JobState.Queued, queued.Poll().State, "the second waits (1 worker)");
            fashion.Cancel();
            Check(running.Wait(TimeSpan.FromSeconds(30)) && queued.Wait(TimeSpan.FromSeconds(30)), "the context's Cancel ends its jobs");
            Equal(JobState.Cancelled, running.Poll().State, "running job cancelled");
            Equal(JobState.Cancelled, queued.Poll().State, "queued job cancelled");
            Equal(JobState.Running, manual.Poll().State, "a manual job is not the context's to cancel");
            manual.Advance(100, TimeSpan.Zero);
            using (var b = manual.TakeImages()) Check(Same(b.ToImages(), blocking), "the manual job still gives the blocking result");
            running.Dispose();
            queued.Dispose();
            manual.Dispose();

            // Dispose while another thread waits on the job: the job is cancelled, the wait returns.
            var waited = fashion.SubmitGenerate(longJob);
            Exception caught = null;
            bool returned = false;
            var waiter = new Thread(() =>
            {
                try
                {
                    waited.Wait();
                    returned = true;
                }
                catch (Exception e)
                {
                    caught = e;
                }
            });
            waiter.Start();
            Check(WaitFor(() => waited.IsDisposed || waited.Poll().State == JobState.Running), "the waited job started");
            Thread.Sleep(20);
            waited.Dispose();
            Check(waiter.Join(30000), "a thread waiting on a disposed job returns");
            Check(returned || caught is ObjectDisposedException, "the wait returned (or found the job disposed): " + caught);
            // The worker is free again: a new job runs at once.
            using (var after = fashion.SubmitGenerate(o))
            {
                Check(after.Wait(TimeSpan.FromSeconds(30)), "a job after the cancelled ones runs");
                using (var b = after.TakeImages()) Check(Same(b.ToImages(), blocking), "and gives the blocking result");
            }
            // A job never disposed is freed by its finalizer.
            fashion.SubmitGenerate(o, new JobOptions { Mode = JobMode.Manual });
            GC.Collect();
            GC.WaitForPendingFinalizers();
        });

        Test("jobs: Busy with MaxQueuedJobs = 1", () =>
        {
            using (var ctx = new Context(fashionDir, new ContextOptions { MaxQueuedJobs = 1 }))
            {
                var a = ctx.SubmitGenerate(longJob);
                Check(WaitFor(() => a.Poll().State == JobState.Running), "the first long job started");
                var b = ctx.SubmitGenerate(longJob);
                Equal(JobState.Queued, b.Poll().State, "the second is queued");
                Fails(Status.Busy, "a third job with one running and one queued", () => ctx.SubmitGenerate(longJob), "queue");
                Fails(Status.Busy, "a fourth job", () => ctx.SubmitGenerate(o));
                Fails(Status.Busy, "GenerateAsync on a full queue throws at once", () => ctx.GenerateAsync(o));
                Fails(Status.Busy, "an encode job on a full queue", () => ctx.SubmitEncode(blocking));
                using (var m = ctx.SubmitGenerate(o, new JobOptions { Mode = JobMode.Manual }))
                    Equal(JobState.Queued, m.Poll().State, "a manual job takes no place in the queue");
                a.Dispose(); // cancels the running job: the queued one starts
                Check(WaitFor(() => b.Poll().State == JobState.Running), "disposing the running job lets the queued one start");
                using (var c = ctx.SubmitGenerate(o))
                {
                    b.Cancel();
                    Check(c.Wait(TimeSpan.FromSeconds(60)), "a job submitted once there was room ran");
                    using (var batch = c.TakeImages()) Check(Same(batch.ToImages(), blocking), "and gives the blocking result");
                }
                b.Dispose();
            }
            Fails(Status.InvalidArgument, "Workers 0", () => new Context(fashionDir, new ContextOptions { Workers = 0 }), "workers");
            Fails(Status.InvalidArgument, "Workers 65", () => new Context(fashionDir, new ContextOptions { Workers = Mirage.Runtime.MaxWorkers + 1 }), "workers");
            Fails(Status.InvalidArgument, "MaxQueuedJobs 0", () => new Context(fashionDir, new ContextOptions { MaxQueuedJobs = 0 }), "max_queued_jobs");
            Fails(Status.InvalidArgument, "MaxQueuedJobs 4097",
                () => new Context(fashionDir, new ContextOptions { MaxQueuedJobs = Mirage.Runtime.MaxQueuedJobs + 1 }), "max_queued_jobs");
            Throws<ArgumentOutOfRangeException>("Workers -1", () => new Context(fashionDir, new ContextOptions { Workers = -1 }));
            Throws<ArgumentOutOfRangeException>("MaxQueuedJobs -1", () => new Context(fashionDir, new ContextOptions { MaxQueuedJobs = -1 }));
            using (var most = new Context(fashionDir, new ContextOptions { Workers = Mirage.Runtime.MaxWorkers, MaxQueuedJobs = Mirage.Runtime.MaxQueuedJobs }))
            using (var job = most.SubmitGenerate(o))
            {
                job.Wait();
                using (var batch = job.TakeImages()) Check(Same(batch.ToImages(), blocking), "64 workers, 4096 queued: the blocking result");
            }
        });

        Test("jobs: GenerateAsync and the other Tasks", () =>
        {
            var task = fashion.GenerateAsync(o);
            Check(Settle(task, 60000), "GenerateAsync completed");
            Equal(TaskStatus.RanToCompletion, task.Status, "task status");
            using (var batch = task.Result) Check(Same(batch.ToImages(), blocking), "GenerateAsync gives the blocking result");

            Func<Task<Image[]>> awaiting = async () =>
            {
                using (var batch = await fashion.GenerateAsync(o).ConfigureAwait(false)) return batch.ToImages();
            };
            var awaited = awaiting();
            Check(Settle(awaited, 60000) && Same(awaited.Result, blocking), "await GenerateAsync");

            // A cancelled token on a long job: the Task is cancelled within a step or so.
            using (var cts = new CancellationTokenSource())
            {
                var clock = Stopwatch.StartNew();
                var running = fashion.GenerateAsync(longJob, cts.Token);
                Thread.Sleep(50);
                Check(!running.IsCompleted, "the long job is still running");
                cts.Cancel();
                Check(Settle(running, 30000), "the cancelled Task ended");
                Check(running.IsCanceled, "the Task is cancelled: " + running.Status);
                Check(clock.Elapsed < TimeSpan.FromSeconds(20), "within reasonable time (" + clock.ElapsedMilliseconds + " ms)");
                try
                {
                    running.Wait();
                    Check(false, "Wait of a cancelled Task throws");
                }
                catch (AggregateException e)
                {
                    Check(e.InnerException is OperationCanceledException, "a cancelled Task throws OperationCanceledException: " + e.InnerException);
                    var oce = e.InnerException as OperationCanceledException;
                    Check(oce != null && oce.CancellationToken == cts.Token, "with the caller's token");
                }
            }
            var pre = fashion.GenerateAsync(o, new CancellationToken(true));
            Check(pre.IsCanceled, "an already cancelled token: a cancelled Task, nothing submitted");

            // The context's Cancel cancels the Task too.
            var byContext = fashion.GenerateAsync(longJob);
            Thread.Sleep(50);
            fashion.Cancel();
            Check(Settle(byContext, 30000) && byContext.IsCanceled, "Context.Cancel cancels a GenerateAsync: " + byContext.Status);

            Fails(Status.InvalidArgument, "GenerateAsync with 0 steps throws at once", () => fashion.GenerateAsync(new GenerateOptions { Steps = 0 }));
            Throws<ArgumentException>("GenerateAsync with a Progress callback",
                () => fashion.GenerateAsync(new GenerateOptions { Steps = 4, Progress = (s, t) => true }));

            // The other operations as Tasks give the blocking results.
            var o2 = new GenerateOptions { Seed = 3, Steps = 8, Strength = 0.5f };
            var img = fashion.Img2ImgAsync(blocking, o2);
            Check(Settle(img, 60000) && Same(img.Result.ToImages(), fashion.Img2Img(blocking, o2)), "Img2ImgAsync = Img2Img");
            var den = fashion.DenoiseAsync(blocking, new GenerateOptions { Steps = 20, Strength = 0.1f });
            Check(Settle(den, 60000) && Same(den.Result.ToImages(), fashion.Denoise(blocking, new GenerateOptions { Steps = 20, Strength = 0.1f })),
                "DenoiseAsync = Denoise");
            var mask = new Image(28, 28, 1);
            for (int i = 0; i < 28 * 14; i++) mask.Pixels[i] = 255;
            var masks = new[] { mask, mask };
            var inp = fashion.InpaintAsync(blocking, masks, new GenerateOptions { Seed = 5, Steps = 8 });
            Check(Settle(inp, 60000) && Same(inp.Result.ToImages(), fashion.Inpaint(blocking, masks, new GenerateOptions { Seed = 5, Steps = 8 })),
                "InpaintAsync = Inpaint");
            var enc = fashion.EncodeAsync(blocking);
            var dist = fashion.Encode(blocking);
            Check(Settle(enc, 60000) && enc.Result.Mean.Data.SequenceEqual(dist.Mean.Data) && enc.Result.Logvar.Data.SequenceEqual(dist.Logvar.Data),
                "EncodeAsync = Encode");
            var dec = fashion.DecodeAsync(dist.Mean, PixelFormat.Rgba8);
            Check(Settle(dec, 60000) && Same(dec.Result.ToImages(), fashion.Decode(dist.Mean, PixelFormat.Rgba8)), "DecodeAsync = Decode");
        });

        Test("jobs: Submit* = the blocking calls", () =>
        {
            var o2 = new GenerateOptions { Seed = 3, Steps = 8, Strength = 0.5f };
            using (var j = fashion.SubmitImg2Img(blocking, o2, new JobOptions { Mode = JobMode.Manual }))
            {
                j.Advance(100, TimeSpan.Zero);
                using (var b = j.TakeImages()) Check(Same(b.ToImages(), fashion.Img2Img(blocking, o2)), "SubmitImg2Img (manual) = Img2Img");
            }
            var od = new GenerateOptions { Steps = 20, Strength = 0.1f };
            using (var j = fashion.SubmitDenoise(blocking, od))
            {
                j.Wait();
                using (var b = j.TakeImages()) Check(Same(b.ToImages(), fashion.Denoise(blocking, od)), "SubmitDenoise = Denoise");
            }
            var mask = new Image(28, 28, 1);
            for (int i = 0; i < 28 * 14; i++) mask.Pixels[i] = 255;
            var oi = new GenerateOptions { Seed = 5, Steps = 8 };
            using (var j = fashion.SubmitInpaint(new[] { blocking[0] }, new[] { mask }, oi))
            {
                j.Wait();
                using (var b = j.TakeImages()) Check(Same(b.ToImages(), fashion.Inpaint(new[] { blocking[0] }, new[] { mask }, oi)), "SubmitInpaint = Inpaint");
            }
            var dist = fashion.Encode(blocking);
            using (var j = fashion.SubmitEncode(blocking, new JobOptions { Mode = JobMode.Manual }))
            {
                Equal(1, j.Advance(10, TimeSpan.Zero), "an encode job is one step");
                var p = j.Poll();
                Check(p.State == JobState.Done && p.Step == 1 && p.Total == 1, "encode job: done, 1/1: " + p);
                Fails(Status.InvalidArgument, "TakeImages of an encode job", () => j.TakeImages(), "latents");
                var l = j.TakeLatents();
                Check(l.Mean.Data.SequenceEqual(dist.Mean.Data) && l.Logvar.Data.SequenceEqual(dist.Logvar.Data), "SubmitEncode = Encode (after a refused take)");
                Check(l.Mean.Shape.SequenceEqual(new[] { 2, 3, 8, 8 }), "encode job shape");
            }
            using (var j = fashion.SubmitDecode(dist.Mean))
            {
                j.Wait();
                Equal(PixelFormat.Gray8, j.Format, "decode job: the set's format by default");
                using (var b = j.TakeImages()) Check(Same(b.ToImages(), fashion.Decode(dist.Mean)), "SubmitDecode = Decode");
            }
            Fails(Status.InvalidArgument, "SubmitImg2Img of an image of the wrong size", () => fashion.SubmitImg2Img(new[] { new Image(27, 28, 1) }, o2), "27");
            Fails(Status.InvalidArgument, "SubmitDecode of the wrong shape", () => fashion.SubmitDecode(new Latents(new float[4 * 8 * 8], 1, 4, 8, 8)));
            Fails(Status.Unsupported, "SubmitInterpolate on an unconditional set", () => fashion.SubmitInterpolate(new[] { "a", "b" }, 2, o));
            Throws<ArgumentNullException>("SubmitImg2Img(null images)", () => fashion.SubmitImg2Img(null, o2));
            Throws<ArgumentNullException>("SubmitDecode(null)", () => fashion.SubmitDecode(null));
            Throws<ArgumentException>("SubmitInpaint with fewer masks than images", () => fashion.SubmitInpaint(blocking, new[] { mask }, oi));
        });

        Test("targets: TakeInto bottom-up BGRA with a stride, RGBA32F, resize; refused targets", () =>
        {
            int stride = 28 * 4 + 12;
            using (var job = fashion.SubmitGenerate(o))
            {
                job.Wait();
                // Refused by the binding: nothing is taken.
                Throws<ArgumentException>("a target one byte too small",
                    () => job.TakeInto(new Target(new byte[28 * 28 * 4 - 1], 28, 28, PixelFormat.Bgra8), new Target(new byte[28 * 28 * 4], 28, 28, PixelFormat.Bgra8)));
                Throws<ArgumentException>("a stride smaller than a row",
                    () => job.TakeInto(new Target(new byte[28 * 28 * 4], 28, 28, PixelFormat.Rgba8) { Stride = 28 * 4 - 1 }, new Target(new byte[28 * 28 * 4], 28, 28, PixelFormat.Rgba8)));
                Throws<ArgumentException>("a float target's stride not a multiple of 4",
                    () => job.TakeInto(new Target(new float[28 * 30 * 4], 28, 28) { Stride = 28 * 16 + 2 }, new Target(new float[28 * 28 * 4], 28, 28)));
                Throws<ArgumentNullException>("a null target", () => job.TakeInto(new Target(new byte[28 * 28], 28, 28, PixelFormat.Gray8), null));
                Throws<ArgumentOutOfRangeException>("an unknown filter",
                    () => job.TakeInto(new Target(new byte[28 * 28], 28, 28, PixelFormat.Gray8) { Filter = (Filter)9 }, new Target(new byte[28 * 28], 28, 28, PixelFormat.Gray8)));
                // Refused by the library (one target for two images): nothing is taken either.
                var untouched = Filled(28 * 28 * 4, 0x5A);
                Fails(Status.InvalidArgument, "one target for two images",
                    () => job.TakeInto(new Target(untouched, 28, 28, PixelFormat.Rgba8)), "2");
                Check(untouched.All(v => v == 0x5A), "a refused TakeInto writes nothing");
                Equal(JobState.Done, job.Poll().State, "the result is still there");

                var first = Filled(28 * stride, 0xAB);            // room for the last row's padding too
                var second = Filled(27 * stride + 28 * 4, 0xCD);  // exactly the bytes the layout needs
                job.TakeInto(new Target(first, 28, 28, PixelFormat.Bgra8) { Stride = stride, BottomUp = true },
                    new Target(second, 28, 28, PixelFormat.Bgra8) { Stride = stride, BottomUp = true });
                CheckBgraBottomUp(first, stride, blockingRgba[0], 0xAB, "image 0");
                CheckBgraBottomUp(second, stride, blockingRgba[1], 0xCD, "image 1 (exact size)");
                Fails(Status.InvalidArgument, "a take after TakeInto", () => job.TakeImages());
            }
            // Float targets (linear light), a resized target, premultiplied alpha of an opaque image.
            using (var job = fashion.SubmitGenerate(o))
            {
                job.Wait();
                var linear = new float[28 * 28 * 4];
                var big = new byte[56 * 56];
                job.TakeInto(new Target(linear, 28, 28), new Target(big, 56, 56, PixelFormat.Gray8) { Filter = Filter.Nearest });
                double worst = 0;
                bool alpha = true;
                for (int i = 0; i < 28 * 28; i++)
                {
                    double expected = SrgbToLinear(blocking[0].Pixels[i] / 255.0);
                    for (int c = 0; c < 3; c++) worst = Math.Max(worst, Math.Abs(linear[i * 4 + c] - expected));
                    alpha &= linear[i * 4 + 3] == 1.0f;
                }
                Check(worst < 0.01, "Rgba32F: the colour in linear light (worst |diff| " + worst.ToString("G3") + ")");
                Check(alpha, "Rgba32F: alpha 1");
                bool nearest = true;
                for (int y = 0; y < 56; y++)
                    for (int x = 0; x < 56; x++) nearest &= big[y * 56 + x] == blocking[1].Pixels[(y / 2) * 28 + x / 2];
                Check(nearest, "a 56x56 target with Filter.Nearest: every source pixel doubled");
            }
            using (var job = fashion.SubmitGenerate(o))
            {
                job.Wait();
                var straight = new byte[28 * 28 * 4];
                var premultiplied = new byte[28 * 28 * 4];
                job.TakeInto(new Target(straight, 28, 28, PixelFormat.Rgba8), new Target(premultiplied, 28, 28, PixelFormat.Rgba8) { Premultiplied = true });
                Check(straight.SequenceEqual(blockingRgba[0].Pixels), "an Rgba8 target = the blocking Rgba8 result");
                Check(premultiplied.SequenceEqual(blockingRgba[1].Pixels), "premultiplied alpha of an opaque image changes nothing");
            }

            // Targets the binding refuses when made.
            Throws<ArgumentNullException>("a Target over null", () => new Target((byte[])null, 28, 28, PixelFormat.Gray8));
            Throws<ArgumentException>("a byte[] Target of Rgba32F", () => new Target(new byte[16], 1, 1, PixelFormat.Rgba32F));
            Throws<ArgumentOutOfRangeException>("a Target of width 0", () => new Target(new byte[16], 0, 1, PixelFormat.Gray8));
            Throws<ArgumentOutOfRangeException>("a Target wider than MaxImageSide",
                () => new Target(new byte[16], Mirage.Runtime.MaxImageSide + 1, 1, PixelFormat.Gray8));
            Throws<ArgumentOutOfRangeException>("a Target of an unknown format", () => new Target(new byte[16], 1, 1, (PixelFormat)42));
            Equal(16, Target.BytesPerPixel(PixelFormat.Rgba32F), "BytesPerPixel(Rgba32F)");
        });

        Test("targets: ImageBatch.WriteInto", () =>
        {
            using (var job = fashion.SubmitGenerate(new GenerateOptions { Seed = 7, Steps = 4, Count = 2, Format = PixelFormat.Rgba8 }))
            {
                job.Wait();
                using (var batch = job.TakeImages())
                {
                    int stride = 28 * 4 + 8;
                    var buf = Filled(28 * stride, 0xEE);
                    batch.WriteInto(1, new Target(buf, 28, 28, PixelFormat.Bgra8) { Stride = stride, BottomUp = true });
                    CheckBgraBottomUp(buf, stride, blockingRgba[1], 0xEE, "WriteInto");
                    var grey = new byte[28 * 28];
                    batch.WriteInto(0, new Target(grey, 28, 28, PixelFormat.Gray8));
                    Check(grey.SequenceEqual(blocking[0].Pixels), "WriteInto a Gray8 target = the grey result");
                    var half = new byte[14 * 14];
                    batch.WriteInto(0, new Target(half, 14, 14, PixelFormat.Gray8));
                    Check(half.Distinct().Count() > 5, "WriteInto a smaller target (bilinear)");
                    Throws<ArgumentOutOfRangeException>("WriteInto index 2", () => batch.WriteInto(2, new Target(grey, 28, 28, PixelFormat.Gray8)));
                    Throws<ArgumentException>("WriteInto a target too small", () => batch.WriteInto(0, new Target(new byte[100], 28, 28, PixelFormat.Gray8)));
                    Throws<ArgumentNullException>("WriteInto(0, null)", () => batch.WriteInto(0, null));
                }
            }
        });

        Test("diffusion options: Noise; Tileable refused by a set that cannot wrap", () =>
        {
            var noise = fashion.SamplePrior(2, 11);
            var withNoise = fashion.Generate(new GenerateOptions { Seed = 7, Steps = 4, Count = 2, Noise = noise });
            Check(!Same(withNoise[0], blocking[0]), "given noise replaces the seed's");
            Check(Same(withNoise, fashion.Generate(new GenerateOptions { Seed = 99, Steps = 4, Count = 2, Noise = noise })),
                "with the noise given, the seed does not matter (eta 0)");
            using (var job = fashion.SubmitGenerate(new GenerateOptions { Seed = 7, Steps = 4, Count = 2, Noise = noise }))
            {
                job.Wait();
                using (var b = job.TakeImages()) Check(Same(b.ToImages(), withNoise), "a job with Noise = the blocking call");
            }
            var img2img = fashion.Img2Img(blocking, new GenerateOptions { Steps = 8, Strength = 0.5f, Noise = noise });
            Equal(2, img2img.Length, "Img2Img with one noise per image");
            Fails(Status.InvalidArgument, "noise of the wrong count", () => fashion.Generate(new GenerateOptions { Steps = 4, Count = 2, Noise = noise.Item(0) }));
            Fails(Status.InvalidArgument, "noise of the wrong shape",
                () => fashion.Generate(new GenerateOptions { Steps = 4, Noise = new Latents(new float[4 * 8 * 8], 1, 4, 8, 8) }));
            Throws<MirageException>("Denoise refuses noise", () => fashion.Denoise(blocking, new GenerateOptions { Steps = 4, Strength = 0.1f, Noise = noise }));

            // fashion decodes 8x8 latents to 28x28 images (a crop): its images cannot wrap (emoji's can, below).
            var tileable = new GenerateOptions { Seed = 7, Steps = 4, Tileable = true };
            Fails(Status.Unsupported, "Tileable on fashion", () => fashion.Generate(tileable), "tileable");
            Fails(Status.Unsupported, "a tileable job on fashion", () => fashion.SubmitGenerate(tileable), "tileable");
            Fails(Status.Unsupported, "a tileable GenerateAsync on fashion throws at once", () => fashion.GenerateAsync(tileable), "tileable");
            Fails(Status.Unsupported, "ContextOptions.Tileable on fashion", () => new Context(fashionDir, new ContextOptions { Tileable = true }), "tileable");
            Check(Same(fashion.Generate(o), blocking), "the context works after the refusals");
        });
    }

    private static void RunPack(string fashionDir, string pack)
    {
        var o = new GenerateOptions { Seed = 7, Steps = 4, Count = 2 };
        Image[] expected;
        using (var dir = new Context(fashionDir)) expected = dir.Generate(o);
        byte[] bytes = File.ReadAllBytes(pack);

        Test("packs: a pack file, FromMemory, truncated bytes", () =>
        {
            using (var c = Context.FromMemory(bytes))
            {
                Equal("fashion", c.Info.Name, "the pack's set name");
                Check(Same(c.Generate(o), expected), "FromMemory of the pack = the directory");
                using (var job = c.SubmitGenerate(o))
                {
                    job.Wait();
                    using (var b = job.TakeImages()) Check(Same(b.ToImages(), expected), "a job on a context from memory");
                }
            }
            using (var c = new Context(pack)) Check(Same(c.Generate(o), expected), "new Context(pack file) = the directory");
            using (var c = new Context(pack, new ContextOptions { Workers = 2 })) Check(Same(c.Generate(o), expected), "a pack file with options");

            // Inside a bigger buffer: offset and count, and a span; the buffer is reused right after.
            var padded = new byte[bytes.Length + 100];
            Buffer.BlockCopy(bytes, 0, padded, 37, bytes.Length);
            var c2 = Context.FromMemory(padded, 37, bytes.Length);
            var c3 = Context.FromMemory(new ReadOnlySpan<byte>(padded, 37, bytes.Length));
            for (int i = 0; i < padded.Length; i++) padded[i] = 0; // the library keeps nothing of the buffer
            GC.Collect();
            Check(Same(c2.Generate(o), expected), "FromMemory(data, offset, count)");
            Check(Same(c3.Generate(o), expected), "FromMemory(ReadOnlySpan)");
            c2.Dispose();
            c3.Dispose();

            Fails(Status.InvalidModel, "truncated bytes", () => Context.FromMemory(bytes, 0, bytes.Length / 2));
            Fails(Status.InvalidModel, "a truncated span", () => Context.FromMemory(new ReadOnlySpan<byte>(bytes, 0, bytes.Length - 1)));
            Fails(Status.InvalidModel, "only a header's worth", () => Context.FromMemory(bytes, 0, 16));
            var corrupt = (byte[])bytes.Clone();
            corrupt[corrupt.Length / 2] ^= 0xFF;
            Fails(Status.InvalidModel, "a corrupted byte", () => Context.FromMemory(corrupt));
            Fails(Status.InvalidModel, "foreign bytes", () => Context.FromMemory(Encoding.ASCII.GetBytes("{\"format_version\": 1} not a pack at all")));
            Throws<ArgumentException>("empty bytes", () => Context.FromMemory(new byte[0]));
            Throws<ArgumentException>("an empty span", () => Context.FromMemory(ReadOnlySpan<byte>.Empty));
            Throws<ArgumentNullException>("FromMemory(null)", () => Context.FromMemory((byte[])null));
            Throws<ArgumentOutOfRangeException>("FromMemory past the end", () => Context.FromMemory(bytes, 10, bytes.Length));
        });
    }

    /// <summary>Tileable images on emoji (32x32 from 8x8 latents: whole pixels per latent cell, so they can wrap).</summary>
    private static void RunTileable(string emojiDir, string packs)
    {
        var plain = new GenerateOptions { Prompt = "a red apple", Seed = 1, Steps = 2 };
        var tileable = new GenerateOptions { Prompt = "a red apple", Seed = 1, Steps = 2, Tileable = true };
        Image[] tiled, plainImages;
        using (var emoji = new Context(emojiDir))
        {
            tiled = emoji.Generate(tileable);
            plainImages = emoji.Generate(plain);
            Check(!Same(tiled[0], plainImages[0]), "tileable differs from plain");
            Check(Same(tiled, emoji.Generate(tileable)), "tileable is deterministic");
            using (var job = emoji.SubmitGenerate(tileable, new JobOptions { Mode = JobMode.Manual }))
            {
                job.Advance(10, TimeSpan.Zero);
                using (var b = job.TakeImages()) Check(Same(b.ToImages(), tiled), "a tileable job = the blocking call");
            }
        }
        using (var prepared = new Context(emojiDir, new ContextOptions { Tileable = true }))
            Check(Same(prepared.Generate(tileable), tiled), "ContextOptions.Tileable: the same tileable images");
        string pack = Path.Combine(packs, "emoji.mirage");
        if (!File.Exists(pack))
        {
            Console.WriteLine("skip tileable from memory: no emoji.mirage in MIRAGE_TEST_PACKS");
            return;
        }
        byte[] bytes = File.ReadAllBytes(pack);
        using (var c = Context.FromMemory(bytes, new ContextOptions { Tileable = true }))
            Check(Same(c.Generate(tileable), tiled), "FromMemory with ContextOptions.Tileable: the directory's tileable images");
        using (var c = Context.FromMemory(bytes))
        {
            Fails(Status.Unsupported, "tileable from memory without ContextOptions.Tileable", () => c.Generate(tileable), "memory");
            Check(Same(c.Generate(plain), plainImages), "FromMemory of the emoji pack = the directory");
        }
    }

    private static void RunImageHelpers()
    {
        var grey = new Image(2, 2, 1, new byte[] { 1, 2, 3, 4 });
        Check(grey.ToRgba32().SequenceEqual(new byte[] { 1, 1, 1, 255, 2, 2, 2, 255, 3, 3, 3, 255, 4, 4, 4, 255 }), "grey to RGBA32");
        Check(grey.ToRgba32(bottomUp: true).SequenceEqual(new byte[] { 3, 3, 3, 255, 4, 4, 4, 255, 1, 1, 1, 255, 2, 2, 2, 255 }),
            "grey to RGBA32, bottom-up");
        var rgb = new Image(1, 2, 3, new byte[] { 1, 2, 3, 4, 5, 6 });
        Check(rgb.ToRgba32().SequenceEqual(new byte[] { 1, 2, 3, 255, 4, 5, 6, 255 }), "RGB to RGBA32");
        Check(rgb.ToRgba32(true).SequenceEqual(new byte[] { 4, 5, 6, 255, 1, 2, 3, 255 }), "RGB to RGBA32, bottom-up");
        var rgba = new Image(1, 2, 4, new byte[] { 1, 2, 3, 4, 5, 6, 7, 8 });
        Check(rgba.ToRgba32().SequenceEqual(rgba.Pixels) && !ReferenceEquals(rgba.ToRgba32(), rgba.Pixels), "RGBA to RGBA32 copies");
        Check(rgba.ToRgba32(true).SequenceEqual(new byte[] { 5, 6, 7, 8, 1, 2, 3, 4 }), "RGBA bottom-up");
        var back = Image.FromRgba32(1, 2, rgba.ToRgba32(true), bottomUp: true);
        Check(back.Pixels.SequenceEqual(rgba.Pixels), "FromRgba32 undoes ToRgba32 (bottom-up)");
        Throws<ArgumentException>("FromRgba32 of the wrong length", () => Image.FromRgba32(2, 2, new byte[3]));
        Throws<ArgumentNullException>("FromRgba32(null)", () => Image.FromRgba32(2, 2, null));
        Check(grey.ConvertTo(4).Pixels.SequenceEqual(grey.ToRgba32()), "ConvertTo(4) of grey");
        Check(grey.ConvertTo(3).ConvertTo(1).Pixels.SequenceEqual(grey.Pixels), "grey -> RGB -> grey");
        Check(new Image(1, 1, 3, new byte[] { 255, 0, 0 }).ConvertTo(1).Pixels[0] == 76, "red to grey (BT.601)");
        Check(rgba.ConvertTo(3).Pixels.SequenceEqual(new byte[] { 1, 2, 3, 5, 6, 7 }), "RGBA to RGB drops alpha");
        Equal(PixelFormat.Rgb8, rgb.Format, "Format of 3 channels");
        Equal(15, new Image(3, 5, 1).Pixels.Length, "zeroed pixels when none are given");
    }
}
