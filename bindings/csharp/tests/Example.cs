// The complete example of bindings/csharp/README.md (keep the two identical). run-tests.sh builds it against
// Mirage.dll (the public API only) and runs it on the fashion-text set with mono, finding libmirage through
// a Mirage.dll.config dllmap rather than LD_LIBRARY_PATH.
using System;
using System.IO;
using System.Threading;
using Mirage;

public static class Example
{
    public static int Main(string[] args)
    {
        string set = args.Length > 0 ? args[0] : "models/fashion-text";
        string outDir = args.Length > 1 ? args[1] : ".";
        if (Mirage.Runtime.Version != Mirage.Runtime.BindingVersion)
            Console.Error.WriteLine("warning: libmirage " + Mirage.Runtime.Version + ", binding " + Mirage.Runtime.BindingVersion);
        try
        {
            // Optional, once per process, before the first Context: CPU only, log lines to our own handler.
            Mirage.Runtime.Init(new RuntimeOptions
            {
                Provider = Provider.Cpu,
                Log = (level, line) => Console.Error.WriteLine("[mirage " + level + "] " + line),
            });

            using (var ctx = new Context(set))
            {
                ContextInfo info = ctx.Info;
                Console.WriteLine(info.Name + ": " + info.Width + "x" + info.Height + "x" + info.Channels
                    + (info.IsTextConditioned ? ", " + info.Text.Tokens + " tokens" : ", no text"));

                // Text-to-image: 4 images, 20 DDIM steps, seed 7; the same seed gives the same pixels.
                Image[] images = ctx.Generate(new GenerateOptions
                {
                    Prompt = info.IsTextConditioned ? "a photo of a sandal" : null,
                    Negative = info.IsTextConditioned ? "a sneaker" : null,
                    Seed = 7,
                    Steps = 20,
                    Count = 4,
                    Progress = (step, total) =>
                    {
                        if (step == total) Console.WriteLine(total + " steps done");
                        return true; // false cancels (MirageException, Status.Cancelled)
                    },
                });
                for (int i = 0; i < images.Length; i++)
                    WritePam(Path.Combine(outDir, "generated-" + i + ".pam"), images[i]);

                // Generate on a worker thread, cancel from this one (a UI's Stop button): the worker's call
                // throws MirageException with Status.Cancelled. A cancel reaches only running generations.
                var running = new ManualResetEventSlim();
                var worker = new Thread(() =>
                {
                    try
                    {
                        ctx.Generate(new GenerateOptions { Steps = 1000, Progress = (step, total) => { running.Set(); return true; } });
                    }
                    catch (MirageException e)
                    {
                        Console.WriteLine("worker: " + e.Status);
                    }
                });
                worker.Start();
                running.Wait();
                ctx.Cancel();
                worker.Join();

                // Re-imagine the first image, keeping its left half (inpaint: 255 = invent, 0 = keep).
                Image[] variation = ctx.Img2Img(new[] { images[0] }, new GenerateOptions { Strength = 0.6f, Steps = 20, Seed = 1 });
                var mask = new Image(info.Width, info.Height, 1);
                for (int y = 0; y < info.Height; y++)
                    for (int x = info.Width / 2; x < info.Width; x++) mask.Pixels[y * info.Width + x] = 255;
                Image[] filled = ctx.Inpaint(new[] { images[0] }, new[] { mask }, new GenerateOptions { Steps = 20, Seed = 2 });
                WritePam(Path.Combine(outDir, "variation.pam"), variation[0]);
                WritePam(Path.Combine(outDir, "inpainted.pam"), filled[0]);

                // The VAE's latent space: encode, draw from the distribution, decode (as RGBA).
                LatentDistribution dist = ctx.Encode(images[0], images[1]);
                Latents z = ctx.Sample(dist.Mean, dist.Logvar, 42);
                Console.WriteLine("latents " + string.Join("x", z.Shape));
                Image[] decoded = ctx.Decode(z, PixelFormat.Rgba8);
                WritePam(Path.Combine(outDir, "decoded.pam"), decoded[0]);

                if (info.IsTextConditioned)
                {
                    // A morph between prompts, and a prompt's embedding.
                    Image[] morph = ctx.Interpolate(new[] { "a photo of a sandal", "a photo of a bag" }, 5,
                        new GenerateOptions { Steps = 20, Seed = 3 });
                    Console.WriteLine("morph: " + morph.Length + " frames");
                    float[] pooled = ctx.Embed("a photo of a sandal").Pooled;
                    Console.WriteLine("embedding: " + pooled.Length + " floats");
                }
            }
            return 0;
        }
        catch (MirageException e)
        {
            Console.Error.WriteLine("mirage: " + e.Status + ": " + e.Message);
            return 1;
        }
    }

    /// <summary>Writes an image as a PAM file (netpbm, RGB_ALPHA) from its RGBA32 pixels, top row first.</summary>
    private static void WritePam(string path, Image image)
    {
        byte[] rgba = image.ToRgba32(bottomUp: false); // Unity textures: bottomUp: true
        using (var f = File.Create(path))
        {
            byte[] header = System.Text.Encoding.ASCII.GetBytes(
                "P7\nWIDTH " + image.Width + "\nHEIGHT " + image.Height + "\nDEPTH 4\nMAXVAL 255\nTUPLTYPE RGB_ALPHA\nENDHDR\n");
            f.Write(header, 0, header.Length);
            f.Write(rgba, 0, rgba.Length);
        }
    }
}
