// Widget labels (@jupyter-widgets/controls) are typeset through the MathJax 2 API, MathJax.Hub.Queue(["Typeset",
// MathJax.Hub, element]). The site bundles MathJax 3, which has no Hub: give it one that calls the MathJax 3 API,
// both before MathJax has loaded (window.MathJax is still the configuration) and after (startup.ready).
(function () {
  const hub = {
    Queue: function (job) {
      const element = Array.isArray(job) ? job[2] : undefined;
      const mathjax = window.MathJax;
      if (!element || !mathjax) return;
      if (mathjax.typesetPromise) {
        mathjax.typesetPromise([element]).catch(function (error) { console.warn("MathJax:", error); });
      } else if (mathjax.startup && mathjax.startup.promise) {
        mathjax.startup.promise.then(function () { hub.Queue(job); });
      }
    },
  };
  window.MathJax = window.MathJax || {};
  window.MathJax.Hub = hub;
  window.MathJax.startup = window.MathJax.startup || {};
  window.MathJax.startup.ready = function () {
    window.MathJax.startup.defaultReady();
    window.MathJax.Hub = hub;
  };
})();
